//! FatturaPA 1.2 (FPR12 for businesses, FPA12 for public administrations), written so that the
//! file passes both the 1.2.2 and the 1.2.3 schemas. Amounts come from `check::Checked`; this
//! module only decides where each one goes.
//!
//! Mapping notes: the transmitter (IdTrasmittente) is the seller; CodiceDestinatario is the PA
//! office code (FPA12), `XXXXXXX` for a buyer outside Italy, the buyer's 7-character code, or
//! `0000000` (with PECDestinatario when a PEC is given). A foreign postal code that is not five
//! digits is written `00000`, as SdI asks. A line discount by amount is written as
//! ScontoMaggiorazione/Importo per unit (amount / quantity, 8 decimals), which is how SdI reads
//! it; the line total stays Ciclo's. Split payment puts EsigibilitaIVA `S` on the taxed summary
//! rows and the amount due (ImportoPagamento) is total - VAT.

use super::check::{Checked, Problem};
use super::model::{Address, DocumentKind, Invoice};
use super::xml::{Xml, fixed};

pub const NAMESPACE: &str = "http://ivaservizi.agenziaentrate.gov.it/docs/xsd/fatture/v1.2";

/// The FormatoTrasmissione / `versione`: FPA12 for a public administration, else FPR12.
pub fn version(invoice: &Invoice) -> &'static str {
    if invoice.buyer.public_administration {
        "FPA12"
    } else {
        "FPR12"
    }
}

/// Most lines a FatturaPA body holds (NumeroLinea is 1..9999).
const MAX_LINES: usize = 9999;

/// The rules only FatturaPA has: its texts are Latin-1 (codes such as Numero and UnitaMisura
/// plain ASCII), not empty and bounded in length, and a body has at most 9999 lines.
pub fn problems(invoice: &Invoice) -> Vec<Problem> {
    let mut out = Vec::new();
    if invoice.lines.len() > MAX_LINES {
        out.push(Problem {
            code: "EINV-FATTURAPA-LINES",
            line: None,
            field: "lines".into(),
            message: format!(
                "{} lines: a FatturaPA document holds at most {MAX_LINES}",
                invoice.lines.len()
            ),
            hint: "split the invoice in two".into(),
        });
    }
    // (field, line, text, most characters FatturaPA allows, ASCII only)
    let mut texts: Vec<(String, Option<usize>, &str, usize, bool)> =
        vec![("number".into(), None, invoice.number.trim(), 20, true)];
    if let Some(reference) = &invoice.refers_to {
        texts.push((
            "refers_to.number".into(),
            None,
            reference.number.trim(),
            20,
            true,
        ));
    }
    for (who, name, address) in [
        ("seller", &invoice.seller.name, &invoice.seller.address),
        ("buyer", &invoice.buyer.name, &invoice.buyer.address),
    ] {
        texts.push((format!("{who}.name"), None, name, 80, false));
        texts.push((
            format!("{who}.address.street"),
            None,
            &address.street,
            60,
            false,
        ));
        texts.push((
            format!("{who}.address.city"),
            None,
            &address.city,
            60,
            false,
        ));
    }
    for (i, line) in invoice.lines.iter().enumerate() {
        let n = i + 1;
        texts.push((
            format!("lines[{n}].description"),
            Some(n),
            &line.description,
            1000,
            false,
        ));
        if let Some(unit) = &line.unit {
            texts.push((format!("lines[{n}].unit"), Some(n), unit, 10, true));
        }
        if let Some(reason) = &line.exemption_reason {
            texts.push((
                format!("lines[{n}].exemption_reason"),
                Some(n),
                reason,
                100,
                false,
            ));
        }
    }
    for (field, line, value, max, ascii) in texts {
        let limit = if ascii { 0x7F } else { 0xFF };
        let bad = value.chars().find(|c| u32::from(*c) > limit);
        let length = value.chars().count();
        let message = match bad {
            Some(c) if ascii => {
                format!("`{c}` cannot be written in this FatturaPA field (plain ASCII only)")
            }
            Some(c) => format!("`{c}` cannot be written in FatturaPA (Latin-1 characters only)"),
            None if length == 0 => "cannot be empty in FatturaPA".to_string(),
            None if length > max => format!("at most {max} characters in FatturaPA"),
            None => continue,
        };
        out.push(Problem {
            code: "EINV-FATTURAPA-TEXT",
            line,
            field,
            message,
            hint: "shorten the text or replace the character".into(),
        });
    }
    out
}

fn split_vat(vat_id: &str) -> (&str, &str) {
    vat_id.split_at(2.min(vat_id.len()))
}

fn address(x: &mut Xml, name: &str, a: &Address) {
    let italian = a.country == "IT";
    let postal_code =
        if a.postal_code.len() == 5 && a.postal_code.bytes().all(|b| b.is_ascii_digit()) {
            a.postal_code.as_str()
        } else {
            "00000"
        };
    x.open(name, &[])
        .leaf("Indirizzo", a.street.trim())
        .leaf("CAP", postal_code)
        .leaf("Comune", a.city.trim())
        .optional("Provincia", a.province.as_deref().filter(|_| italian))
        .leaf("Nazione", &a.country)
        .close(name);
}

/// Writes the document; `progressive` is ProgressivoInvio (the delivery's progressive).
pub fn write(invoice: &Invoice, checked: &Checked, progressive: &str) -> std::io::Result<String> {
    let seller = &invoice.seller;
    let buyer = &invoice.buyer;
    let seller_vat = seller.vat_id.as_deref().unwrap_or_default();
    let (seller_country, seller_code) = split_vat(seller_vat);
    let version = version(invoice);
    let recipient = if buyer.public_administration {
        buyer.sdi_code.clone().unwrap_or_default()
    } else if buyer.address.country != "IT" {
        "XXXXXXX".to_string()
    } else {
        buyer.sdi_code.clone().unwrap_or_else(|| "0000000".into())
    };
    let mut x = Xml::new();
    x.open(
        "p:FatturaElettronica",
        &[
            ("xmlns:p", NAMESPACE),
            ("xmlns:ds", "http://www.w3.org/2000/09/xmldsig#"),
            ("xmlns:xsi", "http://www.w3.org/2001/XMLSchema-instance"),
            ("versione", version),
        ],
    );
    // Header.
    x.open("FatturaElettronicaHeader", &[])
        .open("DatiTrasmissione", &[])
        .open("IdTrasmittente", &[])
        .leaf("IdPaese", seller_country)
        .leaf("IdCodice", seller_code)
        .close("IdTrasmittente")
        .leaf("ProgressivoInvio", progressive)
        .leaf("FormatoTrasmissione", version)
        .leaf("CodiceDestinatario", &recipient);
    if recipient == "0000000" {
        x.optional("PECDestinatario", buyer.pec.as_deref());
    }
    x.close("DatiTrasmissione");
    x.open("CedentePrestatore", &[])
        .open("DatiAnagrafici", &[])
        .open("IdFiscaleIVA", &[])
        .leaf("IdPaese", seller_country)
        .leaf("IdCodice", seller_code)
        .close("IdFiscaleIVA")
        .optional("CodiceFiscale", seller.tax_code.as_deref())
        .open("Anagrafica", &[])
        .leaf("Denominazione", seller.name.trim())
        .close("Anagrafica")
        .leaf("RegimeFiscale", &seller.tax_regime)
        .close("DatiAnagrafici");
    address(&mut x, "Sede", &seller.address);
    if let Some(email) = &seller.email {
        x.open("Contatti", &[])
            .leaf("Email", email)
            .close("Contatti");
    }
    x.close("CedentePrestatore");
    x.open("CessionarioCommittente", &[])
        .open("DatiAnagrafici", &[]);
    if let Some(vat) = &buyer.vat_id {
        let (country, code) = split_vat(vat);
        x.open("IdFiscaleIVA", &[])
            .leaf("IdPaese", country)
            .leaf("IdCodice", code)
            .close("IdFiscaleIVA");
    }
    x.optional("CodiceFiscale", buyer.tax_code.as_deref())
        .open("Anagrafica", &[])
        .leaf("Denominazione", buyer.name.trim())
        .close("Anagrafica")
        .close("DatiAnagrafici");
    address(&mut x, "Sede", &buyer.address);
    x.close("CessionarioCommittente")
        .close("FatturaElettronicaHeader");

    // Body.
    let kind = match invoice.kind {
        DocumentKind::Invoice => "TD01",
        DocumentKind::CreditNote => "TD04",
    };
    x.open("FatturaElettronicaBody", &[])
        .open("DatiGenerali", &[])
        .open("DatiGeneraliDocumento", &[])
        .leaf("TipoDocumento", kind)
        .leaf("Divisa", &invoice.currency)
        .leaf("Data", &invoice.issue_date.to_string())
        .leaf("Numero", invoice.number.trim())
        .leaf("ImportoTotaleDocumento", &fixed(checked.total, 2))
        .close("DatiGeneraliDocumento");
    if let Some(reference) = &invoice.refers_to {
        x.open("DatiFattureCollegate", &[])
            .leaf("IdDocumento", reference.number.trim())
            .leaf("Data", &reference.issue_date.to_string())
            .close("DatiFattureCollegate");
    }
    x.close("DatiGenerali");
    x.open("DatiBeniServizi", &[]);
    for (i, (line, total)) in invoice.lines.iter().zip(&checked.lines).enumerate() {
        x.open("DettaglioLinee", &[])
            .leaf("NumeroLinea", &(i + 1).to_string())
            .leaf("Descrizione", line.description.trim())
            .leaf("Quantita", &fixed(line.quantity.0, 2))
            .optional("UnitaMisura", line.unit.as_deref())
            .leaf("PrezzoUnitario", &fixed(line.unit_price.0, 2));
        if let Some(discount) = &line.discount {
            x.open("ScontoMaggiorazione", &[]).leaf("Tipo", "SC");
            if let Some(percent) = discount.percent {
                x.leaf("Percentuale", &fixed(percent.0, 2));
            } else if let Some(per_unit) = total.discount.checked_div(line.quantity.0).map(|d| {
                d.round_dp_with_strategy(8, rust_decimal::RoundingStrategy::MidpointAwayFromZero)
            }) {
                x.leaf("Importo", &fixed(per_unit, 2));
            }
            x.close("ScontoMaggiorazione");
        }
        x.leaf("PrezzoTotale", &fixed(total.amount, 2))
            .leaf("AliquotaIVA", &fixed(line.vat_rate.0, 2))
            .optional("Natura", line.natura.as_deref().map(str::trim))
            .close("DettaglioLinee");
    }
    for row in &checked.summary {
        x.open("DatiRiepilogo", &[])
            .leaf("AliquotaIVA", &fixed(row.rate, 2))
            .optional("Natura", row.natura.as_deref())
            .leaf("ImponibileImporto", &fixed(row.taxable, 2))
            .leaf("Imposta", &fixed(row.vat, 2));
        if row.natura.is_none() {
            x.leaf(
                "EsigibilitaIVA",
                if invoice.split_payment { "S" } else { "I" },
            );
        }
        x.optional("RiferimentoNormativo", row.reason.as_deref())
            .close("DatiRiepilogo");
    }
    x.close("DatiBeniServizi");
    let payment = &invoice.payment;
    x.open("DatiPagamento", &[])
        .leaf("CondizioniPagamento", &payment.terms)
        .open("DettaglioPagamento", &[])
        .leaf("ModalitaPagamento", &payment.method)
        .leaf("DataScadenzaPagamento", &payment.due_date.to_string())
        .leaf("ImportoPagamento", &fixed(checked.payable, 2))
        .optional("IBAN", payment.iban.as_deref())
        .close("DettaglioPagamento")
        .close("DatiPagamento")
        .close("FatturaElettronicaBody")
        .close("p:FatturaElettronica");
    x.finish()
}
