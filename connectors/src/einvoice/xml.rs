//! A thin layer over quick-xml's event writer for the two invoice writers: elements, leaves
//! and attributes, always through quick-xml, so text and attribute values are escaped
//! (`Rossi & Figli <srl>` comes out as `Rossi &amp; Figli &lt;srl&gt;`). The first write error
//! is kept and returned by `finish`, so the writers read as a list of elements.

use std::io;

use quick_xml::Writer;
use quick_xml::events::{BytesDecl, BytesEnd, BytesStart, BytesText, Event};
use rust_decimal::Decimal;

pub(crate) struct Xml {
    writer: Writer<Vec<u8>>,
    error: Option<io::Error>,
}

impl Xml {
    pub fn new() -> Xml {
        let mut xml = Xml {
            writer: Writer::new_with_indent(Vec::new(), b' ', 2),
            error: None,
        };
        let declaration = Event::Decl(BytesDecl::new("1.0", Some("UTF-8"), None));
        xml.write(declaration);
        xml
    }

    fn write(&mut self, event: Event<'_>) {
        if self.error.is_none()
            && let Err(e) = self.writer.write_event(event)
        {
            self.error = Some(e);
        }
    }

    /// `<name attr="value"...>`
    pub fn open(&mut self, name: &str, attributes: &[(&str, &str)]) -> &mut Xml {
        let mut start = BytesStart::new(name);
        for attribute in attributes {
            start.push_attribute(*attribute);
        }
        self.write(Event::Start(start));
        self
    }

    pub fn close(&mut self, name: &str) -> &mut Xml {
        self.write(Event::End(BytesEnd::new(name)));
        self
    }

    /// `<name>text</name>`
    pub fn leaf(&mut self, name: &str, text: &str) -> &mut Xml {
        self.leaf_with(name, &[], text)
    }

    /// `<name attr="value">text</name>`
    pub fn leaf_with(&mut self, name: &str, attributes: &[(&str, &str)], text: &str) -> &mut Xml {
        self.open(name, attributes);
        self.write(Event::Text(BytesText::new(text)));
        self.close(name)
    }

    /// A leaf only when there is a value.
    pub fn optional(&mut self, name: &str, text: Option<&str>) -> &mut Xml {
        if let Some(text) = text {
            self.leaf(name, text);
        }
        self
    }

    pub fn finish(self) -> Result<String, io::Error> {
        if let Some(e) = self.error {
            return Err(e);
        }
        String::from_utf8(self.writer.into_inner())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }
}

/// A decimal with at least `min` decimals and no needless trailing zeros beyond them:
/// `fixed(3, 2)` is `3.00`, `fixed(0.12345, 2)` is `0.12345`.
pub(crate) fn fixed(value: Decimal, min: u32) -> String {
    let mut value = value.normalize();
    if value.scale() < min {
        value.rescale(min);
    }
    value.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_and_attributes_are_escaped() {
        let mut xml = Xml::new();
        xml.open("a", &[("name", "x\"<&>")])
            .leaf("b", "Rossi & Figli <srl>")
            .close("a");
        let text = xml.finish().unwrap();
        assert!(
            text.contains("<b>Rossi &amp; Figli &lt;srl&gt;</b>"),
            "{text}"
        );
        assert!(text.contains("name=\"x&quot;&lt;&amp;&gt;\""), "{text}");
    }

    #[test]
    fn fixed_pads_to_the_minimum() {
        let d = |s: &str| s.parse::<Decimal>().unwrap();
        assert_eq!(fixed(d("3"), 2), "3.00");
        assert_eq!(fixed(d("0.12345000"), 2), "0.12345");
        assert_eq!(fixed(d("22"), 2), "22.00");
        assert_eq!(fixed(d("-1.5"), 2), "-1.50");
    }
}
