//! The rules an invoice must meet before any XML is written, and the totals they produce.
//!
//! Schemas check shapes, not arithmetic: a FatturaPA file whose summary does not add up is
//! schema-valid and still rejected by SdI. So every amount is computed here, once, and the
//! writers only print what `check` returns. Computation (docs/einvoicing.md):
//! line amount = round_half_up(quantity x unit_price - discount, 2); per VAT rate and Natura
//! code, taxable = sum of line amounts and VAT = round_half_up(taxable x rate / 100, 2);
//! total = taxable + VAT; with split payment the amount due is total - VAT.
//!
//! Every problem has a stable code (`EINV-...`), names the line (1-based) or the field, and
//! carries a hint; all problems are collected, sorted by line, and returned together. All
//! arithmetic is checked: an overflow is a problem, never a panic.

use std::fmt;

use rust_decimal::{Decimal, RoundingStrategy};

use super::codes::{COUNTRIES, CURRENCIES, EAS_SCHEMES};
use super::model::{DocumentKind, Invoice, Line, Number};

/// One broken rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// Stable code, e.g. `EINV-NATURA-SUBCODE`.
    pub code: &'static str,
    /// The invoice line (1-based), when the rule is about one.
    pub line: Option<usize>,
    /// Path of the field, e.g. `lines[2].natura` or `seller.vat_id`.
    pub field: String,
    pub message: String,
    pub hint: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{} line {line}: {}", self.code, self.message),
            None => write!(f, "{} {}: {}", self.code, self.field, self.message),
        }
    }
}

/// The VAT treatment of a line, as EN 16931 names it (UBL tax category codes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Category {
    /// S: standard rate.
    Standard,
    /// Z: zero rated (N3.3..N3.6, non imponibili).
    Zero,
    /// E: exempt (N4 esenti, N5 margin scheme).
    Exempt,
    /// AE: reverse charge (N6.x).
    ReverseCharge,
    /// K: intra-community supply (N3.2).
    IntraCommunity,
    /// G: export outside the EU (N3.1).
    Export,
    /// O: outside the scope of VAT (N1, N2.x, N7).
    NotSubject,
}

impl Category {
    /// The UNCL 5305 code UBL writes.
    pub fn code(self) -> &'static str {
        match self {
            Category::Standard => "S",
            Category::Zero => "Z",
            Category::Exempt => "E",
            Category::ReverseCharge => "AE",
            Category::IntraCommunity => "K",
            Category::Export => "G",
            Category::NotSubject => "O",
        }
    }

    /// The VATEX exemption reason code, where EN 16931 has one for the category.
    pub fn exemption_code(self) -> Option<&'static str> {
        match self {
            Category::ReverseCharge => Some("VATEX-EU-AE"),
            Category::IntraCommunity => Some("VATEX-EU-IC"),
            Category::Export => Some("VATEX-EU-G"),
            Category::NotSubject => Some("VATEX-EU-O"),
            _ => None,
        }
    }
}

/// The Natura codes of FatturaPA 1.2.x, their UBL category and the default legal reference
/// (RiferimentoNormativo, at most 100 Latin-1 characters).
pub const NATURA_CODES: &[(&str, Category, &str)] = &[
    ("N1", Category::NotSubject, "Escluse ex art. 15 DPR 633/72"),
    (
        "N2.1",
        Category::NotSubject,
        "Non soggette ad IVA ai sensi degli artt. da 7 a 7-septies DPR 633/72",
    ),
    ("N2.2", Category::NotSubject, "Non soggette - altri casi"),
    (
        "N3.1",
        Category::Export,
        "Non imponibili - esportazioni, art. 8 DPR 633/72",
    ),
    (
        "N3.2",
        Category::IntraCommunity,
        "Non imponibili - cessioni intracomunitarie, art. 41 DL 331/93",
    ),
    (
        "N3.3",
        Category::Zero,
        "Non imponibili - cessioni verso San Marino",
    ),
    (
        "N3.4",
        Category::Zero,
        "Non imponibili - operazioni assimilate alle cessioni all'esportazione",
    ),
    (
        "N3.5",
        Category::Zero,
        "Non imponibili - a seguito di dichiarazioni d'intento",
    ),
    ("N3.6", Category::Zero, "Non imponibili - altre operazioni"),
    ("N4", Category::Exempt, "Esenti, art. 10 DPR 633/72"),
    (
        "N5",
        Category::Exempt,
        "Regime del margine / IVA non esposta in fattura",
    ),
    (
        "N6.1",
        Category::ReverseCharge,
        "Inversione contabile - cessione di rottami e altri materiali di recupero",
    ),
    (
        "N6.2",
        Category::ReverseCharge,
        "Inversione contabile - cessione di oro e argento",
    ),
    (
        "N6.3",
        Category::ReverseCharge,
        "Inversione contabile - subappalto nel settore edile",
    ),
    (
        "N6.4",
        Category::ReverseCharge,
        "Inversione contabile - cessione di fabbricati",
    ),
    (
        "N6.5",
        Category::ReverseCharge,
        "Inversione contabile - cessione di telefoni cellulari",
    ),
    (
        "N6.6",
        Category::ReverseCharge,
        "Inversione contabile - cessione di prodotti elettronici",
    ),
    (
        "N6.7",
        Category::ReverseCharge,
        "Inversione contabile - prestazioni comparto edile e settori connessi",
    ),
    (
        "N6.8",
        Category::ReverseCharge,
        "Inversione contabile - operazioni settore energetico",
    ),
    (
        "N6.9",
        Category::ReverseCharge,
        "Inversione contabile - altri casi, art. 17 DPR 633/72",
    ),
    ("N7", Category::NotSubject, "IVA assolta in altro stato UE"),
];

fn natura_entry(code: &str) -> Option<&'static (&'static str, Category, &'static str)> {
    NATURA_CODES.iter().find(|(c, _, _)| *c == code)
}

/// What a line comes to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LineTotal {
    /// quantity x unit price, exact.
    pub gross: Decimal,
    /// The discount, exact (a percentage of `gross`, or the amount given).
    pub discount: Decimal,
    /// round_half_up(gross - discount, 2).
    pub amount: Decimal,
    pub category: Category,
}

/// One row of the VAT summary: per rate and Natura code (FatturaPA DatiRiepilogo).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VatSummary {
    pub rate: Decimal,
    pub natura: Option<String>,
    pub category: Category,
    pub taxable: Decimal,
    pub vat: Decimal,
    /// RiferimentoNormativo / exemption reason, for rows with a Natura code.
    pub reason: Option<String>,
}

/// An invoice that passed every rule, with its computed amounts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checked {
    pub lines: Vec<LineTotal>,
    /// In order of first appearance.
    pub summary: Vec<VatSummary>,
    pub taxable: Decimal,
    pub vat: Decimal,
    /// taxable + vat: the document total.
    pub total: Decimal,
    /// What the buyer pays the seller: total, or total - vat with split payment.
    pub payable: Decimal,
}

/// Half-up rounding to 2 decimals (rust_decimal's `round_dp` is banker's rounding).
pub fn round2(value: Decimal) -> Decimal {
    value.round_dp_with_strategy(2, RoundingStrategy::MidpointAwayFromZero)
}

/// Decimal places of a value as written, trailing zeros ignored (10.10 has 1).
fn decimals(value: Decimal) -> u32 {
    value.normalize().scale()
}

/// Digits before the point.
fn integer_digits(value: Decimal) -> usize {
    value
        .abs()
        .trunc()
        .normalize()
        .to_string()
        .trim_start_matches('0')
        .len()
}

struct Problems(Vec<Problem>);

impl Problems {
    fn add(
        &mut self,
        code: &'static str,
        line: Option<usize>,
        field: impl Into<String>,
        message: impl Into<String>,
        hint: impl Into<String>,
    ) {
        self.0.push(Problem {
            code,
            line,
            field: field.into(),
            message: message.into(),
            hint: hint.into(),
        });
    }
}

/// Largest amount FatturaPA can carry: 11 digits before the point.
const MAX_INTEGER_DIGITS: usize = 11;

/// Checks an invoice: its computed amounts, or every problem found.
pub fn check(invoice: &Invoice) -> Result<Checked, Vec<Problem>> {
    let mut p = Problems(Vec::new());
    check_document(invoice, &mut p);
    let mut lines = Vec::new();
    for (index, line) in invoice.lines.iter().enumerate() {
        if let Some(total) = check_line(invoice, index + 1, line, &mut p) {
            lines.push(total);
        }
    }
    let totals = if lines.len() == invoice.lines.len() {
        summarise(invoice, &lines, &mut p)
    } else {
        None
    };
    let mut problems = p.0;
    if problems.is_empty() && totals.is_none() {
        problems.push(Problem {
            code: "EINV-AMOUNT-RANGE",
            line: None,
            field: "lines".into(),
            message: "the invoice's amounts are too large to add up".into(),
            hint: "amounts must stay below 100 billion".into(),
        });
    }
    if problems.is_empty()
        && let Some((summary, taxable, vat, total, payable)) = totals
    {
        return Ok(Checked {
            lines,
            summary,
            taxable,
            vat,
            total,
            payable,
        });
    }
    // Document-level problems first, then by line; stable, so each keeps its order.
    problems.sort_by_key(|p| p.line.unwrap_or(0));
    Err(problems)
}

fn blank(text: &str) -> bool {
    text.trim().is_empty()
}

/// A VAT number: a country prefix EN 16931 knows (ISO 3166, or EL for Greece; BR-CO-09), then
/// letters and digits.
fn is_vat_id(text: &str) -> bool {
    let bytes = text.as_bytes();
    bytes.len() >= 4
        && bytes.len() <= 30
        && bytes.iter().all(u8::is_ascii_alphanumeric)
        && (&text[..2] == "EL" || COUNTRIES.contains(&&text[..2]))
}

/// An ISO 3166-1 alpha-2 code, as EN 16931 lists them (BR-CL-14).
fn is_country(text: &str) -> bool {
    COUNTRIES.contains(&text)
}

/// Two capital letters (an Italian province).
fn is_province(text: &str) -> bool {
    text.len() == 2 && text.bytes().all(|b| b.is_ascii_uppercase())
}

/// A character XML 1.0 cannot carry at all (C0 controls other than tab, line feed and carriage
/// return; U+FFFE and U+FFFF): a file holding one is not XML.
fn xml_illegal(c: char) -> bool {
    (c < ' ' && !matches!(c, '\t' | '\n' | '\r')) || matches!(c, '\u{FFFE}' | '\u{FFFF}')
}

/// An address as FatturaPA's EmailType reads it (the stricter of its two e-mail types, used for
/// PECDestinatario): dot-separated atoms of `[!#-'*+/-9=?A-Z^-~-]`, `@`, the same again, at most
/// 256 characters. Contatti/Email (EmailContattiType) accepts every such address too.
pub(crate) fn is_email(text: &str) -> bool {
    let atoms = |part: &str| {
        !part.is_empty()
            && part.split('.').all(|atom| {
                !atom.is_empty()
                    && atom
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+/=?^_`{|}~-".contains(&b))
            })
    };
    (7..=256).contains(&text.len())
        && text
            .split_once('@')
            .is_some_and(|(local, domain)| atoms(local) && domain.contains('.') && atoms(domain))
}

/// Every text of the invoice that is written into the XML as given.
fn texts(invoice: &Invoice) -> Vec<(String, Option<usize>, &str)> {
    let mut out: Vec<(String, Option<usize>, &str)> =
        vec![("number".into(), None, &invoice.number)];
    if let Some(reference) = &invoice.refers_to {
        out.push(("refers_to.number".into(), None, &reference.number));
    }
    if let Some(reference) = &invoice.buyer_reference {
        out.push(("buyer_reference".into(), None, reference));
    }
    for (who, name, address) in [
        ("seller", &invoice.seller.name, &invoice.seller.address),
        ("buyer", &invoice.buyer.name, &invoice.buyer.address),
    ] {
        out.push((format!("{who}.name"), None, name));
        out.push((format!("{who}.address.street"), None, &address.street));
        out.push((format!("{who}.address.city"), None, &address.city));
        out.push((
            format!("{who}.address.postal_code"),
            None,
            &address.postal_code,
        ));
    }
    if let Some(endpoint) = &invoice.buyer.endpoint {
        out.push(("buyer.endpoint.id".into(), None, &endpoint.id));
    }
    for (i, line) in invoice.lines.iter().enumerate() {
        let n = i + 1;
        out.push((
            format!("lines[{n}].description"),
            Some(n),
            &line.description,
        ));
        if let Some(unit) = &line.unit {
            out.push((format!("lines[{n}].unit"), Some(n), unit));
        }
        if let Some(reason) = &line.exemption_reason {
            out.push((format!("lines[{n}].exemption_reason"), Some(n), reason));
        }
    }
    out
}

fn check_document(invoice: &Invoice, p: &mut Problems) {
    for (field, line, text) in texts(invoice) {
        if let Some(c) = text.chars().find(|c| xml_illegal(*c)) {
            p.add(
                "EINV-TEXT-CHARACTER",
                line,
                field,
                format!(
                    "the character U+{:04X} cannot be written in XML",
                    u32::from(c)
                ),
                "remove the control character (tabs and line breaks are fine)",
            );
        }
    }
    let number = invoice.number.trim();
    if number.is_empty() || number.chars().count() > 20 {
        p.add(
            "EINV-NUMBER",
            None,
            "number",
            "the invoice number must have 1 to 20 characters",
            "FatturaPA's Numero holds at most 20 characters",
        );
    }
    if !CURRENCIES.contains(&invoice.currency.as_str()) {
        p.add(
            "EINV-CURRENCY",
            None,
            "currency",
            format!("`{}` is not an ISO 4217 currency code", invoice.currency),
            "write an ISO 4217 code in capitals, such as EUR, USD or CHF",
        );
    }
    if invoice.issue_date < jiff::civil::date(1970, 1, 1) {
        p.add(
            "EINV-ISSUE-DATE",
            None,
            "issue_date",
            format!("the issue date {} is before 1970", invoice.issue_date),
            "FatturaPA accepts no earlier date: check the year",
        );
    }
    match (invoice.kind, &invoice.refers_to) {
        (DocumentKind::CreditNote, None) => p.add(
            "EINV-CREDIT-NOTE-REF",
            None,
            "refers_to",
            "a credit note must name the invoice it corrects",
            "add refers_to: {number: ..., issue_date: ...}",
        ),
        (_, Some(reference))
            if blank(&reference.number) || reference.number.chars().count() > 20 =>
        {
            p.add(
                "EINV-CREDIT-NOTE-REF",
                None,
                "refers_to.number",
                "the referred invoice number must have 1 to 20 characters",
                "give the number of the invoice this document corrects",
            )
        }
        (_, Some(reference)) if reference.issue_date > invoice.issue_date => p.add(
            "EINV-CREDIT-NOTE-REF",
            None,
            "refers_to.issue_date",
            "the referred invoice is dated after this document",
            "a credit note corrects an earlier invoice",
        ),
        _ => {}
    }
    // Seller.
    let seller = &invoice.seller;
    match seller.vat_id.as_deref().map(str::trim) {
        None | Some("") => p.add(
            "EINV-SELLER-VAT",
            None,
            "seller.vat_id",
            "the seller has no VAT number",
            "write it with its country prefix, such as IT01234567890",
        ),
        Some(vat) if !is_vat_id(vat) => p.add(
            "EINV-SELLER-VAT",
            None,
            "seller.vat_id",
            format!("`{vat}` is not a VAT number with a country prefix"),
            "write it like IT01234567890: a country code (EL for Greece), then letters and digits",
        ),
        Some(vat)
            if vat.starts_with("IT")
                && (vat.len() != 13 || !vat[2..].bytes().all(|b| b.is_ascii_digit())) =>
        {
            p.add(
                "EINV-SELLER-VAT",
                None,
                "seller.vat_id",
                format!("`{vat}` is not an Italian VAT number (IT and 11 digits)"),
                "an Italian partita IVA has 11 digits",
            )
        }
        Some(_) => {}
    }
    let regime = seller.tax_regime.as_str();
    let regime_ok = regime
        .strip_prefix("RF")
        .and_then(|n| n.parse::<u8>().ok())
        .is_some_and(|n| (1..=19).contains(&n) && regime.len() == 4);
    if !regime_ok {
        p.add(
            "EINV-TAX-REGIME",
            None,
            "seller.tax_regime",
            format!("`{regime}` is not a FatturaPA tax regime"),
            "use RF01 (ordinary) .. RF19",
        );
    }
    check_party_texts("seller", &seller.name, &seller.address, p);
    if let Some(email) = &seller.email
        && !is_email(email)
    {
        p.add(
            "EINV-EMAIL",
            None,
            "seller.email",
            format!("`{email}` is not an e-mail address"),
            "write an address such as fatture@rossi.example.it, or leave it out",
        );
    }
    if let Some(code) = &seller.tax_code
        && !is_tax_code(code)
    {
        p.add(
            "EINV-TAX-CODE",
            None,
            "seller.tax_code",
            format!("`{code}` is not an Italian tax code (codice fiscale)"),
            "11 to 16 capital letters and digits",
        );
    }
    // Buyer.
    let buyer = &invoice.buyer;
    check_party_texts("buyer", &buyer.name, &buyer.address, p);
    if let Some(vat) = &buyer.vat_id
        && !is_vat_id(vat)
    {
        p.add(
            "EINV-BUYER-VAT",
            None,
            "buyer.vat_id",
            format!("`{vat}` is not a VAT number with a country prefix"),
            "write it like DE123456789: a country code (EL for Greece), then letters and digits",
        );
    }
    if let Some(code) = &buyer.tax_code
        && !is_tax_code(code)
    {
        p.add(
            "EINV-TAX-CODE",
            None,
            "buyer.tax_code",
            format!("`{code}` is not an Italian tax code (codice fiscale)"),
            "11 to 16 capital letters and digits",
        );
    }
    if buyer.vat_id.is_none() && buyer.tax_code.is_none() {
        p.add(
            "EINV-BUYER-ID",
            None,
            "buyer",
            "the buyer has neither a VAT number nor a tax code",
            "give buyer.vat_id (with its country prefix) or buyer.tax_code",
        );
    }
    let code_ok = |c: &str, len: usize| {
        c.len() == len
            && c.bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
    };
    match (&buyer.sdi_code, buyer.public_administration) {
        (Some(code), true) if !code_ok(code, 6) => p.add(
            "EINV-PA-OFFICE-CODE",
            None,
            "buyer.sdi_code",
            format!("`{code}` is not a 6-character PA office code (codice univoco ufficio)"),
            "a public administration's office code has 6 capital letters or digits (IPA)",
        ),
        (None, true) => p.add(
            "EINV-PA-OFFICE-CODE",
            None,
            "buyer.sdi_code",
            "a public administration buyer needs its 6-character office code",
            "find the codice univoco ufficio on indicepa.gov.it and write it in buyer.sdi_code",
        ),
        (Some(code), false) if !code_ok(code, 7) => p.add(
            "EINV-SDI-CODE",
            None,
            "buyer.sdi_code",
            format!("`{code}` is not a 7-character SdI recipient code"),
            "a business's codice destinatario has 7 capital letters or digits; leave it out to use the PEC or 0000000",
        ),
        _ => {}
    }
    if let Some(pec) = &buyer.pec
        && !is_email(pec)
    {
        p.add(
            "EINV-PEC",
            None,
            "buyer.pec",
            format!("`{pec}` is not an e-mail address"),
            "write the buyer's certified e-mail, such as fatture@pec.example.it",
        );
    }
    if let Some(endpoint) = &buyer.endpoint
        && (endpoint.scheme.len() != 4
            || !EAS_SCHEMES.contains(&endpoint.scheme.as_str())
            || blank(&endpoint.id))
    {
        p.add(
            "EINV-ENDPOINT",
            None,
            "buyer.endpoint",
            "the Peppol endpoint needs a scheme from the EAS code list and an id",
            "for example {scheme: \"0211\", id: IT01234567890}",
        );
    }
    if invoice.lines.is_empty() {
        p.add(
            "EINV-NO-LINES",
            None,
            "lines",
            "the invoice has no lines",
            "add at least one line",
        );
    }
    if invoice.split_payment
        && let Some(index) = invoice.lines.iter().position(|l| {
            l.natura
                .as_deref()
                .is_some_and(|n| n.trim().starts_with("N6"))
        })
    {
        p.add(
            "EINV-SPLIT-REVERSE-CHARGE",
            Some(index + 1),
            format!("lines[{}].natura", index + 1),
            "split payment and reverse charge (N6.x) cannot be on the same invoice",
            "with reverse charge the buyer accounts for the VAT; drop split_payment or the N6 code",
        );
    }
    // Payment.
    let payment = &invoice.payment;
    let code_in = |code: &str, prefix: &str, max: u8| {
        code.len() == 4
            && code
                .strip_prefix(prefix)
                .and_then(|n| n.parse::<u8>().ok())
                .is_some_and(|n| (1..=max).contains(&n))
    };
    if !code_in(&payment.terms, "TP", 3) {
        p.add(
            "EINV-PAYMENT-CODE",
            None,
            "payment.terms",
            format!("`{}` is not a FatturaPA payment condition", payment.terms),
            "TP01 instalments, TP02 in full, TP03 advance",
        );
    }
    if !code_in(&payment.method, "MP", 23) {
        p.add(
            "EINV-PAYMENT-CODE",
            None,
            "payment.method",
            format!("`{}` is not a FatturaPA payment method", payment.method),
            "MP01 cash, MP02 cheque, MP05 bank transfer, MP08 card ... MP23",
        );
    }
    if payment.due_date < invoice.issue_date {
        p.add(
            "EINV-DUE-DATE",
            None,
            "payment.due_date",
            "the due date is before the issue date",
            "give the day the payment is due, on or after the issue date",
        );
    }
    match &payment.iban {
        None if payment.method == "MP05" => p.add(
            "EINV-PAYMENT-IBAN",
            None,
            "payment.iban",
            "a bank transfer (MP05) needs the IBAN to pay to",
            "add payment.iban, or choose another payment method",
        ),
        Some(iban) if !is_iban(iban) => p.add(
            "EINV-PAYMENT-IBAN",
            None,
            "payment.iban",
            format!("`{iban}` is not an IBAN"),
            "write it without spaces: two letters, two digits, then 11 to 30 letters and digits",
        ),
        _ => {}
    }
}

fn is_iban(text: &str) -> bool {
    let b = text.as_bytes();
    b.len() >= 15
        && b.len() <= 34
        && b[..2].iter().all(u8::is_ascii_alphabetic)
        && b[2..4].iter().all(u8::is_ascii_digit)
        && b[4..].iter().all(u8::is_ascii_alphanumeric)
}

fn is_tax_code(text: &str) -> bool {
    (11..=16).contains(&text.len())
        && text
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
}

fn check_party_texts(who: &str, name: &str, address: &super::model::Address, p: &mut Problems) {
    for (field, value) in [
        ("name", name),
        ("address.street", &address.street),
        ("address.city", &address.city),
        ("address.postal_code", &address.postal_code),
    ] {
        if blank(value) {
            p.add(
                "EINV-MISSING",
                None,
                format!("{who}.{field}"),
                format!("{who}.{field} is empty"),
                "fill it in: SdI and EN 16931 require it",
            );
        }
    }
    if !is_country(&address.country) {
        p.add(
            "EINV-COUNTRY",
            None,
            format!("{who}.address.country"),
            format!("`{}` is not an ISO 3166 country code", address.country),
            "write an ISO 3166 code in capitals, such as IT or DE",
        );
    }
    if let Some(province) = &address.province
        && !is_province(province)
    {
        p.add(
            "EINV-PROVINCE",
            None,
            format!("{who}.address.province"),
            format!("`{province}` is not a province code"),
            "write the two capital letters of the province, such as MI",
        );
    }
    if address.country == "IT"
        && (address.postal_code.len() != 5
            || !address.postal_code.bytes().all(|b| b.is_ascii_digit()))
    {
        p.add(
            "EINV-POSTAL-CODE",
            None,
            format!("{who}.address.postal_code"),
            format!(
                "`{}` is not an Italian postal code (CAP)",
                address.postal_code
            ),
            "an Italian CAP has 5 digits; quote it in YAML ('00184') so leading zeros stay",
        );
    }
}

/// Checks one line and computes its amount; `None` when the amount cannot be computed.
fn check_line(invoice: &Invoice, n: usize, line: &Line, p: &mut Problems) -> Option<LineTotal> {
    let field = |name: &str| format!("lines[{n}].{name}");
    let mut ok = true;
    if blank(&line.description) {
        p.add(
            "EINV-MISSING",
            Some(n),
            field("description"),
            "the description is empty",
            "say what was sold",
        );
    }
    let quantity = line.quantity.0;
    if quantity <= Decimal::ZERO || decimals(quantity) > 8 || integer_digits(quantity) > 12 {
        p.add(
            "EINV-QUANTITY",
            Some(n),
            field("quantity"),
            format!(
                "quantity {} must be above 0, with at most 8 decimals",
                line.quantity
            ),
            "a returned item is a credit note line with a positive quantity",
        );
        ok = false;
    }
    let price = line.unit_price.0;
    if decimals(price) > 8 {
        p.add(
            "EINV-UNIT-PRICE-DECIMALS",
            Some(n),
            field("unit_price"),
            format!("unit price {} has more than 8 decimals", line.unit_price),
            "round the unit price to at most 8 decimals",
        );
        ok = false;
    }
    if price < Decimal::ZERO || integer_digits(price) > MAX_INTEGER_DIGITS {
        p.add(
            "EINV-UNIT-PRICE",
            Some(n),
            field("unit_price"),
            format!(
                "unit price {} must be 0 or more, below 100 billion",
                line.unit_price
            ),
            "express a reduction as a discount, or a correction as a credit note",
        );
        ok = false;
    }
    // VAT rate and Natura.
    let rate = line.vat_rate.0;
    let natura = line.natura.as_deref().map(str::trim);
    if rate < Decimal::ZERO || rate >= Decimal::from(100) || decimals(rate) > 2 {
        p.add(
            "EINV-VAT-RATE",
            Some(n),
            field("vat_rate"),
            format!(
                "VAT rate {} must be a percentage from 0 to 99.99 with at most 2 decimals",
                line.vat_rate
            ),
            "write the rate in percent: 22, 10, 5, 4 or 0",
        );
        ok = false;
    }
    let mut category = Category::Standard;
    match natura {
        None if rate.is_zero() => {
            p.add(
                "EINV-ZERO-RATE-NEEDS-NATURA",
                Some(n),
                field("natura"),
                "a 0% VAT rate needs a Natura code saying why no VAT is charged",
                "add natura: N2.1, N3.1, N4, N6.3 ... (see docs/einvoicing.md)",
            );
            ok = false;
        }
        None => {}
        Some(code) => match natura_entry(code) {
            Some((_, cat, _)) => {
                category = *cat;
                if rate > Decimal::ZERO {
                    p.add(
                        "EINV-NATURA-WITH-RATE",
                        Some(n),
                        field("natura"),
                        format!("Natura {code} is for lines without VAT, but the rate is {rate}%"),
                        "set vat_rate: 0 or remove the Natura code",
                    );
                    ok = false;
                }
            }
            None if matches!(code, "N2" | "N3" | "N6") => {
                p.add(
                    "EINV-NATURA-SUBCODE",
                    Some(n),
                    field("natura"),
                    format!("Natura {code} must be written with its sub-code"),
                    match code {
                        "N2" => "use N2.1 or N2.2",
                        "N3" => "use N3.1 .. N3.6",
                        _ => "use N6.1 .. N6.9",
                    },
                );
                ok = false;
            }
            None => {
                p.add(
                    "EINV-NATURA-UNKNOWN",
                    Some(n),
                    field("natura"),
                    format!("`{code}` is not a FatturaPA Natura code"),
                    "valid: N1, N2.1, N2.2, N3.1..N3.6, N4, N5, N6.1..N6.9, N7",
                );
                ok = false;
            }
        },
    }
    if matches!(category, Category::ReverseCharge | Category::IntraCommunity)
        && invoice.buyer.vat_id.is_none()
    {
        p.add(
            "EINV-BUYER-VAT-REQUIRED",
            Some(n),
            "buyer.vat_id",
            format!("Natura {} needs the buyer's VAT number", natura.unwrap_or_default()),
            "with reverse charge or an intra-community supply the buyer accounts for the VAT: add buyer.vat_id",
        );
    }
    if line.exemption_reason.as_deref().is_some_and(blank) {
        p.add(
            "EINV-EXEMPTION-REASON",
            Some(n),
            field("exemption_reason"),
            "the exemption reason is empty",
            "cite the law, or leave it out for the Natura code's default",
        );
    }
    if line.exemption_reason.is_some() && natura.is_none() {
        p.add(
            "EINV-EXEMPTION-REASON",
            Some(n),
            field("exemption_reason"),
            "an exemption reason is only for lines with a Natura code",
            "remove it, or add the Natura code it explains",
        );
    }
    if !ok {
        return None;
    }
    // Amounts.
    let Some(gross) = quantity.checked_mul(price) else {
        overflow(p, n, "quantity x unit_price");
        return None;
    };
    let mut discount = Decimal::ZERO;
    if let Some(d) = &line.discount {
        match (d.percent, d.amount) {
            (Some(Number(percent)), None) => {
                if percent <= Decimal::ZERO || percent > Decimal::from(100) || decimals(percent) > 2
                {
                    p.add(
                        "EINV-DISCOUNT",
                        Some(n),
                        field("discount.percent"),
                        format!("discount {percent}% must be above 0 and at most 100, with at most 2 decimals"),
                        "write the percentage: 10 for 10%",
                    );
                    return None;
                }
                let Some(value) = gross
                    .checked_mul(percent)
                    .and_then(|v| v.checked_div(Decimal::from(100)))
                else {
                    overflow(p, n, "discount");
                    return None;
                };
                discount = value;
            }
            (None, Some(Number(amount))) => {
                if amount <= Decimal::ZERO || decimals(amount) > 2 || amount > gross {
                    p.add(
                        "EINV-DISCOUNT",
                        Some(n),
                        field("discount.amount"),
                        format!("discount {amount} must be above 0, at most the line's {gross}, with at most 2 decimals"),
                        "the amount is taken off quantity x unit price",
                    );
                    return None;
                }
                discount = amount;
            }
            _ => {
                p.add(
                    "EINV-DISCOUNT",
                    Some(n),
                    field("discount"),
                    "a discount has either percent or amount",
                    "write discount: {percent: 10} or discount: {amount: 5.00}",
                );
                return None;
            }
        }
    }
    let Some(net) = gross.checked_sub(discount) else {
        overflow(p, n, "the line amount");
        return None;
    };
    let amount = round2(net);
    if integer_digits(amount) > MAX_INTEGER_DIGITS {
        overflow(p, n, "the line amount");
        return None;
    }
    if let Some(stated) = line.amount {
        if decimals(stated.0) > 2 {
            p.add(
                "EINV-AMOUNT-DECIMALS",
                Some(n),
                field("amount"),
                format!("amount {stated} has more than 2 decimals"),
                "amounts have exactly 2 decimals",
            );
        } else if stated.0 != amount {
            p.add(
                "EINV-LINE-TOTAL",
                Some(n),
                field("amount"),
                format!("the stated amount {stated} differs from quantity x unit price - discount = {amount:.2}"),
                "amount = round_half_up(quantity x unit_price - discount, 2)",
            );
        }
    }
    Some(LineTotal {
        gross,
        discount,
        amount,
        category,
    })
}

fn overflow(p: &mut Problems, n: usize, what: &str) {
    p.add(
        "EINV-AMOUNT-RANGE",
        Some(n),
        format!("lines[{n}]"),
        format!("{what} is too large"),
        "amounts must stay below 100 billion",
    );
}

type Totals = (Vec<VatSummary>, Decimal, Decimal, Decimal, Decimal);

/// The VAT summary and the document totals, compared with the stated ones.
fn summarise(invoice: &Invoice, lines: &[LineTotal], p: &mut Problems) -> Option<Totals> {
    let mut summary: Vec<VatSummary> = Vec::new();
    for (line, total) in invoice.lines.iter().zip(lines) {
        let natura = line.natura.as_deref().map(|n| n.trim().to_string());
        let rate = line.vat_rate.0.normalize();
        let row = match summary
            .iter_mut()
            .position(|r| r.rate == rate && r.natura == natura)
        {
            Some(i) => &mut summary[i],
            None => {
                let reason = natura.as_deref().map(|code| {
                    line.exemption_reason.clone().unwrap_or_else(|| {
                        natura_entry(code)
                            .map(|(_, _, text)| text.to_string())
                            .unwrap_or_default()
                    })
                });
                summary.push(VatSummary {
                    rate,
                    natura,
                    category: total.category,
                    taxable: Decimal::ZERO,
                    vat: Decimal::ZERO,
                    reason,
                });
                summary.last_mut()?
            }
        };
        row.taxable = row.taxable.checked_add(total.amount)?;
    }
    let mut taxable = Decimal::ZERO;
    let mut vat = Decimal::ZERO;
    for row in &mut summary {
        let tax = row
            .taxable
            .checked_mul(row.rate)
            .and_then(|v| v.checked_div(Decimal::from(100)));
        let Some(tax) = tax else {
            p.add(
                "EINV-AMOUNT-RANGE",
                None,
                "lines",
                "the VAT of a rate is too large",
                "amounts must stay below 100 billion",
            );
            return None;
        };
        row.vat = round2(tax);
        taxable = taxable.checked_add(row.taxable)?;
        vat = vat.checked_add(row.vat)?;
    }
    let total = taxable.checked_add(vat)?;
    if integer_digits(total) > MAX_INTEGER_DIGITS {
        p.add(
            "EINV-AMOUNT-RANGE",
            None,
            "totals.total",
            "the invoice total is too large",
            "amounts must stay below 100 billion",
        );
        return None;
    }
    let payable = if invoice.split_payment {
        total.checked_sub(vat)?
    } else {
        total
    };
    if let Some(stated) = &invoice.totals {
        for (name, stated, computed) in [
            ("taxable", stated.taxable, taxable),
            ("vat", stated.vat, vat),
            ("total", stated.total, total),
        ] {
            let Some(stated) = stated else { continue };
            if decimals(stated.0) > 2 {
                p.add(
                    "EINV-AMOUNT-DECIMALS",
                    None,
                    format!("totals.{name}"),
                    format!("the stated {name} {stated} has more than 2 decimals"),
                    "amounts have exactly 2 decimals",
                );
            } else if stated.0 != computed {
                p.add(
                    "EINV-TOTALS",
                    None,
                    format!("totals.{name}"),
                    format!("the stated {name} {stated} differs from the sum of its parts, {computed:.2}"),
                    "VAT is computed per rate on the sum of the rounded line amounts; total = taxable + VAT",
                );
            }
        }
    }
    Some((summary, taxable, vat, total, payable))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal::Decimal;

    #[test]
    fn rounding_is_half_up() {
        assert_eq!(
            round2("2.345".parse::<Decimal>().unwrap()).to_string(),
            "2.35"
        );
        assert_eq!(
            round2("6.699".parse::<Decimal>().unwrap()).to_string(),
            "6.70"
        );
        assert_eq!(
            round2("0.2178".parse::<Decimal>().unwrap()).to_string(),
            "0.22"
        );
    }
}
