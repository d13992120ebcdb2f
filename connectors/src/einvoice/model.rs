//! The invoice as Ciclo receives it: plain serde structs, read from YAML (`serde-saphyr`, with
//! line and column in errors), JSON (`serde_json`) or a process variable. Unknown keys are
//! refused, so a misspelt field is an error rather than a silently missing value.
//!
//! Numbers are `rust_decimal` values read exactly: from a string (`"10.15"`), from a JSON
//! number (serde_json keeps every digit), or from a YAML number whose shortest text has at most
//! 15 significant digits (so the float a YAML parser makes stands for exactly what was typed).
//! The meaning of each field, and the rules on it, are in `docs/einvoicing.md`.

use std::fmt;

use jiff::civil::Date;
use rust_decimal::Decimal;
use serde::Deserialize;

/// An invoice or credit note.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Invoice {
    /// The document number (at most 20 characters in FatturaPA).
    pub number: String,
    pub issue_date: Date,
    /// `invoice` (default) or `credit_note`.
    #[serde(rename = "type", default)]
    pub kind: DocumentKind,
    /// ISO 4217 code, default EUR.
    #[serde(default = "default_currency")]
    pub currency: String,
    /// The invoice a credit note corrects (required for credit notes).
    pub refers_to: Option<Reference>,
    pub seller: Seller,
    pub buyer: Buyer,
    pub lines: Vec<Line>,
    /// Split payment (scissione dei pagamenti): the buyer pays the VAT to the state.
    #[serde(default)]
    pub split_payment: bool,
    pub payment: Payment,
    /// Totals as the sender computed them; when given they must equal Ciclo's.
    pub totals: Option<StatedTotals>,
    /// The buyer's reference for the invoice (UBL BuyerReference); default: the number.
    pub buyer_reference: Option<String>,
}

fn default_currency() -> String {
    "EUR".into()
}

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum DocumentKind {
    #[default]
    Invoice,
    CreditNote,
}

/// An earlier document, by number and date.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reference {
    pub number: String,
    pub issue_date: Date,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Seller {
    pub name: String,
    /// VAT number with its country prefix: IT01234567890.
    pub vat_id: Option<String>,
    /// Codice fiscale, when it differs from the VAT number.
    pub tax_code: Option<String>,
    pub address: Address,
    /// FatturaPA RegimeFiscale, default RF01 (ordinary).
    #[serde(default = "default_tax_regime")]
    pub tax_regime: String,
    pub email: Option<String>,
}

fn default_tax_regime() -> String {
    "RF01".into()
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Address {
    pub street: String,
    pub city: String,
    pub postal_code: String,
    /// Two-letter Italian province code (MI, RM...), for Italian addresses.
    pub province: Option<String>,
    /// ISO 3166-1 alpha-2 code.
    pub country: String,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Buyer {
    pub name: String,
    pub vat_id: Option<String>,
    pub tax_code: Option<String>,
    pub address: Address,
    /// A public administration: FatturaPA FPA12, and `sdi_code` is its 6-character office code.
    #[serde(default)]
    pub public_administration: bool,
    /// SdI recipient code: 7 characters for businesses, 6 for a PA office.
    pub sdi_code: Option<String>,
    /// Certified e-mail (PEC) for SdI delivery when there is no recipient code.
    pub pec: Option<String>,
    /// Peppol electronic address; default derived from the VAT id (docs/einvoicing.md).
    pub endpoint: Option<Endpoint>,
}

/// A Peppol participant id: EAS scheme code and identifier.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Endpoint {
    pub scheme: String,
    pub id: String,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Line {
    pub description: String,
    pub quantity: Number,
    /// Unit of measure as written on the invoice (FatturaPA) and UN/ECE rec. 20 code for
    /// UBL (default `C62`, one).
    pub unit: Option<String>,
    /// Price of one unit, at most 8 decimals.
    pub unit_price: Number,
    pub discount: Option<Discount>,
    /// VAT rate in percent (22, 10, 4, 0).
    pub vat_rate: Number,
    /// FatturaPA Natura code, required with a 0 rate: N1, N2.1, N3.2, N6.3...
    pub natura: Option<String>,
    /// The text of the law that a Natura code rests on (RiferimentoNormativo); default per code.
    pub exemption_reason: Option<String>,
    /// The line total the sender computed; when given it must equal Ciclo's.
    pub amount: Option<Number>,
}

/// A discount on a line: a percentage of quantity x unit price, or an amount off the line.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Discount {
    pub percent: Option<Number>,
    pub amount: Option<Number>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Payment {
    /// FatturaPA CondizioniPagamento: TP01 instalments, TP02 in full (default), TP03 advance.
    #[serde(default = "default_terms")]
    pub terms: String,
    /// FatturaPA ModalitaPagamento: MP05 bank transfer (default), MP01 cash, MP08 card...
    #[serde(default = "default_method")]
    pub method: String,
    pub due_date: Date,
    pub iban: Option<String>,
}

fn default_terms() -> String {
    "TP02".into()
}

fn default_method() -> String {
    "MP05".into()
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatedTotals {
    pub taxable: Option<Number>,
    pub vat: Option<Number>,
    pub total: Option<Number>,
}

/// A decimal read exactly (see the module comment).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Number(pub Decimal);

impl fmt::Display for Number {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The token serde_json uses for numbers with `arbitrary_precision`.
const JSON_NUMBER_TOKEN: &str = "$serde_json::private::Number";

impl<'de> Deserialize<'de> for Number {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Number, D::Error> {
        deserializer.deserialize_any(NumberVisitor)
    }
}

struct NumberVisitor;

fn exact<E: serde::de::Error>(text: &str) -> Result<Number, E> {
    let text = text.trim();
    let parsed = if text.contains(['e', 'E']) {
        Decimal::from_scientific(text)
    } else {
        Decimal::from_str_exact(text)
    };
    parsed
        .map(Number)
        .map_err(|_| E::custom(format!("`{text}` is not a decimal number a field can hold")))
}

impl<'de> serde::de::Visitor<'de> for NumberVisitor {
    type Value = Number;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a decimal number (12.50) or a string holding one (\"12.50\")")
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Number, E> {
        exact(v)
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Number, E> {
        Ok(Number(Decimal::from(v)))
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Number, E> {
        Ok(Number(Decimal::from(v)))
    }

    fn visit_i128<E: serde::de::Error>(self, v: i128) -> Result<Number, E> {
        Decimal::try_from_i128_with_scale(v, 0)
            .map(Number)
            .map_err(|_| E::custom(format!("{v} is too large")))
    }

    fn visit_u128<E: serde::de::Error>(self, v: u128) -> Result<Number, E> {
        i128::try_from(v)
            .map_err(|_| E::custom(format!("{v} is too large")))
            .and_then(|v| self.visit_i128(v))
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Number, E> {
        // Rust prints the shortest text that reads back as the same float. With at most 15
        // significant digits that text is what was typed (no two such decimals share a float);
        // beyond that the float may not be what was typed, so the value is refused.
        if !v.is_finite() {
            return Err(E::custom("not a finite number"));
        }
        let text = format!("{v}");
        let digits = text
            .chars()
            .filter(char::is_ascii_digit)
            .collect::<String>();
        if digits.trim_start_matches('0').trim_end_matches('0').len() > 15 {
            return Err(E::custom(format!(
                "{text} has more than 15 significant digits: write it in quotes, as \"{text}\""
            )));
        }
        exact(&text)
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Number, A::Error> {
        // serde_json with `arbitrary_precision` hands a number over as a one-entry map.
        let key: Option<String> = map.next_key()?;
        match key.as_deref() {
            Some(JSON_NUMBER_TOKEN) => {
                let text: String = map.next_value()?;
                exact(&text)
            }
            _ => Err(serde::de::Error::invalid_type(
                serde::de::Unexpected::Map,
                &self,
            )),
        }
    }
}

/// A document that could not be read as an invoice (not a rule error: those come from
/// `check`). Line and column are those of the source text when known.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError {
    pub message: String,
    pub line: Option<u64>,
    pub column: Option<u64>,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.line, self.column) {
            (Some(line), Some(column)) => write!(f, "{line}:{column}: {}", self.message),
            (Some(line), None) => write!(f, "{line}: {}", self.message),
            _ => f.write_str(&self.message),
        }
    }
}

impl Invoice {
    /// Reads YAML.
    pub fn from_yaml(text: &str) -> Result<Invoice, ParseError> {
        let mut options = serde_saphyr::Options::default();
        // `NO` stays a string (a country code!), as analysts expect.
        options.strict_booleans = true;
        serde_saphyr::from_str_with_options(text, options).map_err(|e| {
            let location = e.location();
            ParseError {
                message: e.to_string(),
                line: location.as_ref().map(|l| l.line()),
                column: location.as_ref().map(|l| l.column()),
            }
        })
    }

    /// Reads JSON.
    pub fn from_json(text: &str) -> Result<Invoice, ParseError> {
        serde_json::from_str(text).map_err(|e| ParseError {
            message: e.to_string(),
            line: (e.line() > 0).then_some(e.line() as u64),
            column: (e.column() > 0).then_some(e.column() as u64),
        })
    }

    /// Reads a JSON value (a process variable turned into JSON).
    pub fn from_json_value(value: serde_json::Value) -> Result<Invoice, ParseError> {
        serde_json::from_value(value).map_err(|e| ParseError {
            message: e.to_string(),
            line: None,
            column: None,
        })
    }

    /// Reads a file's text: JSON when the name ends in `.json`, YAML otherwise.
    pub fn from_file_text(name: &str, text: &str) -> Result<Invoice, ParseError> {
        if name.to_ascii_lowercase().ends_with(".json") {
            Invoice::from_json(text)
        } else {
            Invoice::from_yaml(text)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const YAML: &str = "number: A1\nissue_date: 2026-01-15\nseller:\n  name: S\n  vat_id: IT01234567890\n  address: {street: Via Roma 1, city: Milano, postal_code: '20100', country: IT}\nbuyer:\n  name: B\n  vat_id: IT09876543210\n  address: {street: Via Po 2, city: Torino, postal_code: '10100', country: IT}\nlines:\n  - {description: x, quantity: 3, unit_price: 10.15, vat_rate: 22}\n  - {description: y, quantity: \"0.5\", unit_price: \"0.123456789\", vat_rate: 22}\npayment: {due_date: 2026-02-15, iban: IT60X0542811101000000123456}\n";

    #[test]
    fn numbers_are_read_exactly_from_yaml_and_json() {
        let invoice = Invoice::from_yaml(YAML).unwrap();
        assert_eq!(invoice.lines[0].unit_price.0.to_string(), "10.15");
        assert_eq!(invoice.lines[1].unit_price.0.to_string(), "0.123456789");
        assert_eq!(invoice.currency, "EUR");
        let json = r#"{"number":"A1","issue_date":"2026-01-15","seller":{"name":"S","vat_id":"IT01234567890","address":{"street":"v","city":"c","postal_code":"20100","country":"IT"}},"buyer":{"name":"B","address":{"street":"v","city":"c","postal_code":"20100","country":"IT"}},"lines":[{"description":"x","quantity":3,"unit_price":0.1234567890123456789,"vat_rate":"22"}],"payment":{"due_date":"2026-02-15"}}"#;
        let invoice = Invoice::from_json(json).unwrap();
        assert_eq!(
            invoice.lines[0].unit_price.0.to_string(),
            "0.1234567890123456789"
        );
    }

    #[test]
    fn unknown_keys_and_long_floats_are_refused_with_a_position() {
        let e = Invoice::from_yaml(&YAML.replace("vat_rate: 22}", "vat_rat: 22}")).unwrap_err();
        assert!(e.message.contains("vat_rat"), "{e}");
        assert!(e.line.is_some(), "{e:?}");
        let e = Invoice::from_yaml(&YAML.replace("10.15", "0.1234567890123456789")).unwrap_err();
        assert!(e.message.contains("quotes"), "{e}");
    }
}
