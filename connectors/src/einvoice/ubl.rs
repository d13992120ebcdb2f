//! UBL 2.1 Invoice and CreditNote following EN 16931 and Peppol BIS Billing 3.0. Amounts come
//! from `check::Checked`; the VAT breakdown is regrouped by UBL tax category and rate (EN 16931
//! wants one breakdown per category and rate, while FatturaPA keeps one per Natura code).
//!
//! Choices (docs/einvoicing.md has the table):
//! - Natura -> category: N6.x AE, N3.2 K, N3.1 G, N3.3..N3.6 Z, N4 and N5 E, N1, N2.x and N7 O.
//! - Endpoint ids (Peppol EAS): an Italian VAT number 0211, a PA office code 0201, an Italian
//!   tax code 0210; DE 9930, ES 9920, FR 9957, NL 9944, AT 9914 VAT numbers; anything else
//!   must be given as `buyer.endpoint`.
//! - Split payment: the VAT is written as PrepaidAmount, with a note, so PayableAmount is
//!   total - VAT as in FatturaPA and BR-CO-16 holds.
//! - "Not subject" (O) lines: EN 16931 forbids VAT ids on such an invoice (BR-O-02) and other
//!   categories with it (BR-O-11), so the seller's VAT number goes in PartyLegalEntity and an
//!   invoice mixing O with other categories is refused.

use rust_decimal::Decimal;

use super::check::{Category, Checked, Problem, round2};
use super::model::{Address, DocumentKind, Invoice};
use super::xml::{Xml, fixed};

pub const CUSTOMIZATION_ID: &str =
    "urn:cen.eu:en16931:2017#compliant#urn:fdc:peppol.eu:2017:poacc:billing:3.0";
pub const PROFILE_ID: &str = "urn:fdc:peppol.eu:2017:poacc:billing:01:1.0";

/// Peppol EAS codes for VAT numbers by country prefix.
const VAT_SCHEMES: &[(&str, &str)] = &[
    ("IT", "0211"),
    ("DE", "9930"),
    ("ES", "9920"),
    ("FR", "9957"),
    ("NL", "9944"),
    ("AT", "9914"),
];

fn vat_scheme(vat_id: &str) -> Option<&'static str> {
    VAT_SCHEMES
        .iter()
        .find(|(country, _)| vat_id.starts_with(country))
        .map(|(_, scheme)| *scheme)
}

/// The buyer's Peppol endpoint: given, PA office, VAT number, or Italian tax code.
fn buyer_endpoint(invoice: &Invoice) -> Option<(String, String)> {
    let buyer = &invoice.buyer;
    if let Some(e) = &buyer.endpoint {
        return Some((e.scheme.clone(), e.id.clone()));
    }
    if buyer.public_administration {
        return buyer.sdi_code.clone().map(|code| ("0201".into(), code));
    }
    if let Some(vat) = &buyer.vat_id
        && let Some(scheme) = vat_scheme(vat)
    {
        return Some((scheme.into(), vat.clone()));
    }
    if buyer.address.country == "IT"
        && let Some(code) = &buyer.tax_code
    {
        return Some(("0210".into(), code.clone()));
    }
    None
}

/// The rules only UBL has.
pub fn problems(invoice: &Invoice, checked: &Checked) -> Vec<Problem> {
    let mut out = Vec::new();
    let seller_vat = invoice.seller.vat_id.as_deref().unwrap_or_default();
    if vat_scheme(seller_vat).is_none() {
        out.push(Problem {
            code: "EINV-UBL-ENDPOINT",
            line: None,
            field: "seller.vat_id".into(),
            message: "no Peppol endpoint scheme is known for the seller's VAT number".into(),
            hint: "supported: IT, DE, ES, FR, NL, AT VAT numbers".into(),
        });
    }
    if buyer_endpoint(invoice).is_none() {
        out.push(Problem {
            code: "EINV-UBL-ENDPOINT",
            line: None,
            field: "buyer.endpoint".into(),
            message: "the buyer has no Peppol endpoint".into(),
            hint: "add buyer.endpoint: {scheme: \"0088\", id: ...} (Peppol EAS code list)".into(),
        });
    }
    let not_subject = checked
        .lines
        .iter()
        .position(|l| l.category == Category::NotSubject);
    if let Some(index) = not_subject
        && checked
            .lines
            .iter()
            .any(|l| l.category != Category::NotSubject)
    {
        out.push(Problem {
            code: "EINV-UBL-NOT-SUBJECT-MIXED",
            line: Some(index + 1),
            field: format!("lines[{}].natura", index + 1),
            message: "a line outside the scope of VAT (N1, N2.x, N7) cannot share a UBL invoice with taxed lines".into(),
            hint: "EN 16931 rule BR-O-11: issue the not-subject lines on their own invoice".into(),
        });
    }
    out
}

/// One UBL VAT breakdown: category and rate.
struct Breakdown {
    category: Category,
    rate: Decimal,
    taxable: Decimal,
    vat: Decimal,
    reason: Option<String>,
}

fn breakdowns(checked: &Checked) -> Vec<Breakdown> {
    let mut out: Vec<Breakdown> = Vec::new();
    for row in &checked.summary {
        match out
            .iter_mut()
            .find(|b| b.category == row.category && b.rate == row.rate)
        {
            Some(b) => {
                b.taxable += row.taxable;
                b.vat += row.vat;
            }
            None => out.push(Breakdown {
                category: row.category,
                rate: row.rate,
                taxable: row.taxable,
                vat: row.vat,
                reason: row.reason.clone(),
            }),
        }
    }
    out
}

/// UN/ECE recommendation 20 code for a unit as people write it; C62 (one) otherwise.
fn unit_code(unit: Option<&str>) -> &'static str {
    match unit.map(|u| u.trim().to_ascii_lowercase()).as_deref() {
        Some("h" | "hr" | "hour" | "hours" | "ora" | "ore") => "HUR",
        Some("day" | "days" | "giorno" | "giorni" | "gg") => "DAY",
        Some("kg") => "KGM",
        Some("g") => "GRM",
        Some("m") => "MTR",
        Some("l" | "lt") => "LTR",
        Some("pz" | "pcs" | "piece" | "pieces" | "nr" | "n.") => "H87",
        Some("month" | "months" | "mese" | "mesi") => "MON",
        _ => "C62",
    }
}

/// UNCL 4461 payment means for a FatturaPA ModalitaPagamento.
fn payment_means(method: &str) -> &'static str {
    match method {
        "MP01" => "10",
        "MP02" | "MP03" => "20",
        "MP05" => "58",
        "MP08" => "48",
        "MP19" | "MP20" | "MP21" => "59",
        _ => "1",
    }
}

fn postal_address(x: &mut Xml, a: &Address) {
    x.open("cac:PostalAddress", &[])
        .leaf("cbc:StreetName", a.street.trim())
        .leaf("cbc:CityName", a.city.trim())
        .leaf("cbc:PostalZone", a.postal_code.trim())
        .optional("cbc:CountrySubentity", a.province.as_deref())
        .open("cac:Country", &[])
        .leaf("cbc:IdentificationCode", &a.country)
        .close("cac:Country")
        .close("cac:PostalAddress");
}

/// A party: endpoint, name, address, VAT (unless `vat_in_legal_entity`), legal entity.
#[allow(clippy::too_many_arguments)]
fn party(
    x: &mut Xml,
    wrapper: &str,
    endpoint: Option<(String, String)>,
    name: &str,
    address: &Address,
    vat_id: Option<&str>,
    vat_in_legal_entity: bool,
    email: Option<&str>,
) {
    x.open(wrapper, &[]).open("cac:Party", &[]);
    if let Some((scheme, id)) = endpoint {
        x.leaf_with("cbc:EndpointID", &[("schemeID", &scheme)], &id);
    }
    x.open("cac:PartyName", &[])
        .leaf("cbc:Name", name.trim())
        .close("cac:PartyName");
    postal_address(x, address);
    if let Some(vat) = vat_id.filter(|_| !vat_in_legal_entity) {
        x.open("cac:PartyTaxScheme", &[])
            .leaf("cbc:CompanyID", vat)
            .open("cac:TaxScheme", &[])
            .leaf("cbc:ID", "VAT")
            .close("cac:TaxScheme")
            .close("cac:PartyTaxScheme");
    }
    x.open("cac:PartyLegalEntity", &[])
        .leaf("cbc:RegistrationName", name.trim())
        .optional("cbc:CompanyID", vat_id.filter(|_| vat_in_legal_entity))
        .close("cac:PartyLegalEntity");
    if let Some(email) = email {
        x.open("cac:Contact", &[])
            .leaf("cbc:ElectronicMail", email)
            .close("cac:Contact");
    }
    x.close("cac:Party").close(wrapper);
}

fn tax_category(x: &mut Xml, name: &str, category: Category, rate: Decimal, reason: Option<&str>) {
    x.open(name, &[]).leaf("cbc:ID", category.code());
    if category != Category::NotSubject {
        x.leaf("cbc:Percent", &fixed(rate, 2));
    }
    // EN 16931 wants a reason on every category without VAT except zero rated (BR-Z-10 forbids
    // one there).
    if let Some(reason) = reason.filter(|_| category != Category::Zero) {
        x.optional("cbc:TaxExemptionReasonCode", category.exemption_code())
            .leaf("cbc:TaxExemptionReason", reason);
    }
    x.open("cac:TaxScheme", &[])
        .leaf("cbc:ID", "VAT")
        .close("cac:TaxScheme")
        .close(name);
}

/// Writes the document.
pub fn write(invoice: &Invoice, checked: &Checked) -> std::io::Result<String> {
    let credit = invoice.kind == DocumentKind::CreditNote;
    let (root, namespace, line_name, quantity_name) = if credit {
        (
            "CreditNote",
            "urn:oasis:names:specification:ubl:schema:xsd:CreditNote-2",
            "cac:CreditNoteLine",
            "cbc:CreditedQuantity",
        )
    } else {
        (
            "Invoice",
            "urn:oasis:names:specification:ubl:schema:xsd:Invoice-2",
            "cac:InvoiceLine",
            "cbc:InvoicedQuantity",
        )
    };
    let currency = invoice.currency.as_str();
    let money = [("currencyID", currency)];
    let not_subject = checked
        .lines
        .iter()
        .any(|l| l.category == Category::NotSubject);
    let mut x = Xml::new();
    x.open(
        root,
        &[
            ("xmlns", namespace),
            (
                "xmlns:cac",
                "urn:oasis:names:specification:ubl:schema:xsd:CommonAggregateComponents-2",
            ),
            (
                "xmlns:cbc",
                "urn:oasis:names:specification:ubl:schema:xsd:CommonBasicComponents-2",
            ),
        ],
    )
    .leaf("cbc:CustomizationID", CUSTOMIZATION_ID)
    .leaf("cbc:ProfileID", PROFILE_ID)
    .leaf("cbc:ID", invoice.number.trim())
    .leaf("cbc:IssueDate", &invoice.issue_date.to_string());
    if credit {
        x.leaf("cbc:CreditNoteTypeCode", "381");
    } else {
        x.leaf("cbc:DueDate", &invoice.payment.due_date.to_string())
            .leaf("cbc:InvoiceTypeCode", "380");
    }
    if invoice.split_payment {
        x.leaf(
            "cbc:Note",
            "Scissione dei pagamenti, art. 17-ter DPR 633/72: the buyer pays the VAT to the State; it is shown as the prepaid amount.",
        );
    }
    x.leaf("cbc:DocumentCurrencyCode", currency).leaf(
        "cbc:BuyerReference",
        invoice
            .buyer_reference
            .as_deref()
            .unwrap_or(invoice.number.trim()),
    );
    if let Some(reference) = &invoice.refers_to {
        x.open("cac:BillingReference", &[])
            .open("cac:InvoiceDocumentReference", &[])
            .leaf("cbc:ID", reference.number.trim())
            .leaf("cbc:IssueDate", &reference.issue_date.to_string())
            .close("cac:InvoiceDocumentReference")
            .close("cac:BillingReference");
    }
    let seller = &invoice.seller;
    let seller_vat = seller.vat_id.as_deref().unwrap_or_default();
    party(
        &mut x,
        "cac:AccountingSupplierParty",
        vat_scheme(seller_vat).map(|s| (s.to_string(), seller_vat.to_string())),
        &seller.name,
        &seller.address,
        Some(seller_vat),
        not_subject,
        seller.email.as_deref(),
    );
    let buyer = &invoice.buyer;
    party(
        &mut x,
        "cac:AccountingCustomerParty",
        buyer_endpoint(invoice),
        &buyer.name,
        &buyer.address,
        buyer.vat_id.as_deref().filter(|_| !not_subject),
        false,
        None,
    );
    if checked
        .lines
        .iter()
        .any(|l| l.category == Category::IntraCommunity)
    {
        // BR-IC-11 and BR-IC-12: an intra-community supply names its delivery date and country.
        x.open("cac:Delivery", &[])
            .leaf("cbc:ActualDeliveryDate", &invoice.issue_date.to_string())
            .open("cac:DeliveryLocation", &[])
            .open("cac:Address", &[])
            .open("cac:Country", &[])
            .leaf("cbc:IdentificationCode", &buyer.address.country)
            .close("cac:Country")
            .close("cac:Address")
            .close("cac:DeliveryLocation")
            .close("cac:Delivery");
    }
    let payment = &invoice.payment;
    x.open("cac:PaymentMeans", &[])
        .leaf("cbc:PaymentMeansCode", payment_means(&payment.method));
    if credit {
        x.leaf("cbc:PaymentDueDate", &payment.due_date.to_string());
    }
    if let Some(iban) = &payment.iban {
        x.open("cac:PayeeFinancialAccount", &[])
            .leaf("cbc:ID", iban)
            .close("cac:PayeeFinancialAccount");
    }
    x.close("cac:PaymentMeans");
    let terms = match payment.terms.as_str() {
        "TP01" => "Payment in instalments",
        "TP03" => "Advance payment",
        _ => "Payment in full",
    };
    x.open("cac:PaymentTerms", &[])
        .leaf("cbc:Note", &format!("{terms}, due {}", payment.due_date))
        .close("cac:PaymentTerms");
    x.open("cac:TaxTotal", &[])
        .leaf_with("cbc:TaxAmount", &money, &fixed(checked.vat, 2));
    for b in breakdowns(checked) {
        x.open("cac:TaxSubtotal", &[])
            .leaf_with("cbc:TaxableAmount", &money, &fixed(b.taxable, 2))
            .leaf_with("cbc:TaxAmount", &money, &fixed(b.vat, 2));
        tax_category(
            &mut x,
            "cac:TaxCategory",
            b.category,
            b.rate,
            b.reason.as_deref(),
        );
        x.close("cac:TaxSubtotal");
    }
    x.close("cac:TaxTotal");
    let prepaid = checked.total - checked.payable;
    x.open("cac:LegalMonetaryTotal", &[])
        .leaf_with(
            "cbc:LineExtensionAmount",
            &money,
            &fixed(checked.taxable, 2),
        )
        .leaf_with("cbc:TaxExclusiveAmount", &money, &fixed(checked.taxable, 2))
        .leaf_with("cbc:TaxInclusiveAmount", &money, &fixed(checked.total, 2));
    if !prepaid.is_zero() {
        x.leaf_with("cbc:PrepaidAmount", &money, &fixed(prepaid, 2));
    }
    x.leaf_with("cbc:PayableAmount", &money, &fixed(checked.payable, 2))
        .close("cac:LegalMonetaryTotal");
    for (i, (line, total)) in invoice.lines.iter().zip(&checked.lines).enumerate() {
        x.open(line_name, &[])
            .leaf("cbc:ID", &(i + 1).to_string())
            .leaf_with(
                quantity_name,
                &[("unitCode", unit_code(line.unit.as_deref()))],
                &fixed(line.quantity.0, 2),
            )
            .leaf_with("cbc:LineExtensionAmount", &money, &fixed(total.amount, 2));
        // The allowance is what takes the rounded gross to the line amount, in 2 decimals.
        let allowance = round2(total.gross) - total.amount;
        if !total.discount.is_zero() && !allowance.is_zero() {
            x.open("cac:AllowanceCharge", &[])
                .leaf("cbc:ChargeIndicator", "false")
                .leaf("cbc:AllowanceChargeReasonCode", "95")
                .leaf("cbc:AllowanceChargeReason", "Discount")
                .leaf_with("cbc:Amount", &money, &fixed(allowance, 2))
                .close("cac:AllowanceCharge");
        }
        x.open("cac:Item", &[])
            .leaf("cbc:Name", line.description.trim());
        tax_category(
            &mut x,
            "cac:ClassifiedTaxCategory",
            total.category,
            line.vat_rate.0,
            None,
        );
        x.close("cac:Item")
            .open("cac:Price", &[])
            .leaf_with("cbc:PriceAmount", &money, &fixed(line.unit_price.0, 2))
            .close("cac:Price")
            .close(line_name);
    }
    x.close(root);
    x.finish()
}
