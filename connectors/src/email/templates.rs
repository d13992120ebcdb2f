//! E-mail templates: for each message a subject, an HTML body and a text body, each with
//! optional locale variants, rendered by handlebars in strict mode.
//!
//! Layout, under `<processes>/templates/`:
//!
//! ```text
//! quote-email/
//!   subject.hbs         body.html.hbs         body.txt.hbs          (required: the default)
//!   subject.it.hbs      body.html.it.hbs      body.txt.it.hbs       (optional: locale `it`)
//! ```
//!
//! A file is `<part>[.<locale>].hbs` with part `subject`, `body.html` or `body.txt`. Every
//! locale present must have all three parts, so a message is never sent half in one language
//! and half in another. The folder name is the name a `send:` step uses.
//!
//! Two handlebars registries, because escaping is a per-registry setting: the HTML body is
//! rendered with HTML escaping (a company called `<script>` stays text), the subject and the
//! text body with none (a URL with `=` and `&` must arrive byte for byte, not as `&#x3D;`).
//! Both are strict: a missing variable is an error naming the template and the variable, never
//! an empty string in a customer's e-mail.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use handlebars::{Handlebars, RenderErrorReason};

/// The three parts of a message, by their file-name stem.
const PARTS: [&str; 3] = ["subject", "body.html", "body.txt"];

/// A problem loading or rendering a template.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("cannot read the templates folder {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("template {path}: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("{0}")]
    Layout(String),
    #[error("no e-mail template `{0}` (expected a folder `{0}/` in the templates folder)")]
    UnknownMessage(String),
    #[error("template `{template}`: the variable `{variable}` is missing")]
    MissingVariable { template: String, variable: String },
    #[error("template `{template}`: {message}")]
    Render { template: String, message: String },
}

/// The three rendered parts of one e-mail.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rendered {
    pub subject: String,
    pub html: String,
    pub text: String,
}

/// All templates of the templates folder, parsed once at start.
pub struct Templates {
    html: Handlebars<'static>,
    plain: Handlebars<'static>,
    /// Message name -> its locales ("" is the default).
    messages: BTreeMap<String, BTreeSet<String>>,
}

impl std::fmt::Debug for Templates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Templates")
            .field("messages", &self.messages)
            .finish()
    }
}

impl Templates {
    /// No templates: every send fails with "no e-mail template".
    pub fn empty() -> Templates {
        Templates {
            html: registry(true),
            plain: registry(false),
            messages: BTreeMap::new(),
        }
    }

    /// Loads every message folder of `dir`. A folder that does not exist holds no templates; a
    /// file that does not parse, or a message missing a part, refuses the whole load.
    pub fn load(dir: &Path) -> Result<Templates, TemplateError> {
        let mut templates = Templates::empty();
        if !dir.exists() {
            return Ok(templates);
        }
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| TemplateError::Io { path, source }
        };
        let mut folders: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(io(dir))?
            .map(|e| e.map(|e| e.path()))
            .collect::<Result<_, _>>()
            .map_err(io(dir))?;
        folders.sort();
        for folder in folders.into_iter().filter(|p| p.is_dir()) {
            let Some(name) = folder
                .file_name()
                .and_then(|n| n.to_str())
                .map(String::from)
            else {
                continue;
            };
            let mut files: Vec<PathBuf> = std::fs::read_dir(&folder)
                .map_err(io(&folder))?
                .map(|e| e.map(|e| e.path()))
                .collect::<Result<_, _>>()
                .map_err(io(&folder))?;
            files.sort();
            // (part, locale) pairs found, to check each locale is complete.
            let mut found: BTreeMap<String, BTreeSet<&'static str>> = BTreeMap::new();
            for file in files {
                let Some(file_name) = file.file_name().and_then(|n| n.to_str()) else {
                    continue;
                };
                let Some(stem) = file_name.strip_suffix(".hbs") else {
                    continue;
                };
                let Some((part, locale)) = split_part(stem) else {
                    return Err(TemplateError::Layout(format!(
                        "template {}: the name must be subject[.LOCALE].hbs, \
                         body.html[.LOCALE].hbs or body.txt[.LOCALE].hbs",
                        file.display()
                    )));
                };
                let text = std::fs::read_to_string(&file).map_err(io(&file))?;
                let registry = if part == "body.html" {
                    &mut templates.html
                } else {
                    &mut templates.plain
                };
                registry
                    .register_template_string(&key(&name, part, &locale), text)
                    .map_err(|e| TemplateError::Syntax {
                        path: file.clone(),
                        message: e.to_string(),
                    })?;
                found.entry(locale).or_default().insert(part);
            }
            if found.is_empty() {
                continue;
            }
            if !found.contains_key("") {
                return Err(TemplateError::Layout(format!(
                    "templates {}: the default (no locale) subject.hbs, body.html.hbs and \
                     body.txt.hbs are required",
                    folder.display()
                )));
            }
            for (locale, parts) in &found {
                let missing: Vec<&str> = PARTS
                    .iter()
                    .copied()
                    .filter(|p| !parts.contains(p))
                    .collect();
                if !missing.is_empty() {
                    let suffix = if locale.is_empty() {
                        String::new()
                    } else {
                        format!(".{locale}")
                    };
                    let names: Vec<String> =
                        missing.iter().map(|p| format!("{p}{suffix}.hbs")).collect();
                    return Err(TemplateError::Layout(format!(
                        "templates {}: missing {}",
                        folder.display(),
                        names.join(", ")
                    )));
                }
            }
            templates.messages.insert(name, found.into_keys().collect());
        }
        Ok(templates)
    }

    /// Names of the messages loaded.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.messages.keys().map(String::as_str)
    }

    /// Renders message `name` in `locale` (exact, then its language: `it-CH` falls back to `it`,
    /// then the default) with `data` as the variables.
    pub fn render(
        &self,
        name: &str,
        locale: Option<&str>,
        data: &serde_json::Value,
    ) -> Result<Rendered, TemplateError> {
        let locales = self
            .messages
            .get(name)
            .ok_or_else(|| TemplateError::UnknownMessage(name.to_string()))?;
        let locale = choose_locale(locales, locale);
        let render = |registry: &Handlebars<'static>, part: &str| {
            let key = key(name, part, &locale);
            registry.render(&key, data).map_err(|e| {
                let template = format!("{key}.hbs");
                match e.reason() {
                    RenderErrorReason::MissingVariable(Some(variable)) => {
                        TemplateError::MissingVariable {
                            template,
                            variable: variable.clone(),
                        }
                    }
                    reason => TemplateError::Render {
                        template,
                        message: reason.to_string(),
                    },
                }
            })
        };
        Ok(Rendered {
            subject: render(&self.plain, "subject")?,
            html: render(&self.html, "body.html")?,
            text: render(&self.plain, "body.txt")?,
        })
    }
}

fn registry(escape_html: bool) -> Handlebars<'static> {
    let mut registry = Handlebars::new();
    registry.set_strict_mode(true);
    registry.register_helper("money", Box::new(money_helper));
    registry.register_helper("percent", Box::new(percent_helper));
    if !escape_html {
        registry.register_escape_fn(handlebars::no_escape);
    }
    registry
}

/// `{{money amount}}` writes an amount with two decimals (half away from zero) and thousands
/// grouped, `1,220.00`; `{{money amount "it"}}` in the Italian way, `1.220,00`. The amount is a
/// number or a text holding one (decimals are exact: no binary floats on the way); `null`
/// writes nothing. Anything else is an error naming the helper, not a wrong figure in a letter.
fn money_helper(
    h: &handlebars::Helper,
    _: &Handlebars,
    _: &handlebars::Context,
    _: &mut handlebars::RenderContext,
    out: &mut dyn handlebars::Output,
) -> handlebars::HelperResult {
    if let Some((amount, locale)) = decimal_param(h, "money")? {
        out.write(&ciclo_engine::value::format_money(amount, locale))?;
    }
    Ok(())
}

/// `{{percent fraction}}` writes a fraction as a percentage with up to two decimals:
/// `0.2352941` is `23.53%`, `0.2` is `20%`; `{{percent fraction "it"}}` is `23,53%`.
fn percent_helper(
    h: &handlebars::Helper,
    _: &Handlebars,
    _: &handlebars::Context,
    _: &mut handlebars::RenderContext,
    out: &mut dyn handlebars::Output,
) -> handlebars::HelperResult {
    if let Some((fraction, locale)) = decimal_param(h, "percent")? {
        let text = ciclo_engine::value::format_money(
            fraction * rust_decimal::Decimal::ONE_HUNDRED,
            locale,
        );
        let text = text
            .strip_suffix(".00")
            .or_else(|| text.strip_suffix(",00"))
            .unwrap_or(&text);
        out.write(&format!("{text}%"))?;
    }
    Ok(())
}

/// The helper's number (a JSON number or a text holding one; `None` for null) and its optional
/// locale, or an error that names the helper and the value.
fn decimal_param<'a>(
    h: &'a handlebars::Helper,
    helper: &str,
) -> Result<Option<(rust_decimal::Decimal, &'a str)>, handlebars::RenderError> {
    let bad = |what: String| handlebars::RenderErrorReason::Other(format!("{helper}: {what}"));
    let value = h
        .param(0)
        .ok_or_else(|| {
            bad(format!(
                "write {{{{{helper} value}}}} or {{{{{helper} value \"it\"}}}}"
            ))
        })?
        .value();
    let text = match value {
        serde_json::Value::Null => return Ok(None),
        serde_json::Value::Number(n) => n.to_string(),
        serde_json::Value::String(s) => s.trim().to_string(),
        other => return Err(bad(format!("{other} is not a number")).into()),
    };
    let number = text
        .parse::<rust_decimal::Decimal>()
        .or_else(|_| rust_decimal::Decimal::from_scientific(&text))
        .map_err(|_| bad(format!("{text:?} is not a number")))?;
    let locale = match h.param(1).map(|p| p.value()) {
        None => "en",
        Some(serde_json::Value::String(l)) => l.as_str(),
        Some(other) => return Err(bad(format!("the locale {other} is not a text")).into()),
    };
    Ok(Some((number, locale)))
}

/// The registry name of a part: the path it came from, without `.hbs`, so errors name the file.
fn key(message: &str, part: &str, locale: &str) -> String {
    if locale.is_empty() {
        format!("{message}/{part}")
    } else {
        format!("{message}/{part}.{locale}")
    }
}

/// `body.html.it` -> (`body.html`, `it`); `subject` -> (`subject`, ``).
fn split_part(stem: &str) -> Option<(&'static str, String)> {
    // Longest parts first so `body.html` is not read as part `body` with locale `html`.
    for part in ["body.html", "body.txt", "subject"] {
        if stem == part {
            return Some((part, String::new()));
        }
        if let Some(locale) = stem
            .strip_prefix(part)
            .and_then(|rest| rest.strip_prefix('.'))
        {
            let valid = !locale.is_empty()
                && locale
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
            return valid.then(|| (part, locale.to_string()));
        }
    }
    None
}

fn choose_locale(available: &BTreeSet<String>, wanted: Option<&str>) -> String {
    let Some(wanted) = wanted.map(str::trim).filter(|w| !w.is_empty()) else {
        return String::new();
    };
    let find = |l: &str| {
        available
            .iter()
            .find(|a| a.eq_ignore_ascii_case(l))
            .cloned()
    };
    if let Some(exact) = find(wanted) {
        return exact;
    }
    let language = wanted.split(['-', '_']).next().unwrap_or(wanted);
    find(language).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_is_written_with_cents_and_grouped_thousands() {
        let d = |s: &str| s.parse::<rust_decimal::Decimal>().unwrap();
        assert_eq!(
            ciclo_engine::value::format_money(d("1220"), "en"),
            "1,220.00"
        );
        assert_eq!(
            ciclo_engine::value::format_money(d("1220"), "it"),
            "1.220,00"
        );
        assert_eq!(
            ciclo_engine::value::format_money(d("720.005"), "en"),
            "720.01"
        );
        assert_eq!(ciclo_engine::value::format_money(d("0.4"), "it-CH"), "0,40");
        assert_eq!(
            ciclo_engine::value::format_money(d("1234567.891"), "en"),
            "1,234,567.89"
        );
        assert_eq!(
            ciclo_engine::value::format_money(d("-1000"), "en"),
            "-1,000.00"
        );
        assert_eq!(ciclo_engine::value::format_money(d("-0.001"), "en"), "0.00");
        assert_eq!(
            ciclo_engine::value::format_money(d("999.999"), "en"),
            "1,000.00"
        );

        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            &[
                (
                    "m/subject.hbs",
                    "{{money a}} {{money b \"it\"}} [{{money c}}]",
                ),
                ("m/body.html.hbs", "{{percent d}} {{percent e \"it\"}}"),
                ("m/body.txt.hbs", "{{money s}}"),
            ],
        );
        let templates = Templates::load(dir.path()).unwrap();
        let data: serde_json::Value = serde_json::from_str(
            r#"{"a": 1220, "b": 5435.5, "c": null, "s": " 12.3 ", "d": 0.2, "e": 0.2352941}"#,
        )
        .unwrap();
        let out = templates.render("m", None, &data).unwrap();
        assert_eq!(out.subject, "1,220.00 5.435,50 []");
        assert_eq!(out.text, "12.30");
        assert_eq!(out.html, "20% 23,53%");
        let bad: serde_json::Value =
            serde_json::from_str(r#"{"a": 1, "b": 1, "c": 1, "s": "ten", "d": 0, "e": 0}"#)
                .unwrap();
        let err = templates.render("m", None, &bad).unwrap_err().to_string();
        assert!(err.contains("money") && err.contains("ten"), "{err}");
    }

    fn write(dir: &Path, files: &[(&str, &str)]) {
        for (path, text) in files {
            let path = dir.join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
    }

    const QUOTE: &[(&str, &str)] = &[
        (
            "quote/subject.hbs",
            "Quote {{quote.number}} for {{company}}",
        ),
        (
            "quote/body.html.hbs",
            "<p>{{company}}</p><a href=\"{{link}}\">x</a>",
        ),
        ("quote/body.txt.hbs", "{{company}} {{link}}"),
        ("quote/subject.it.hbs", "Offerta {{quote.number}}"),
        ("quote/body.html.it.hbs", "<p>Gentile {{company}}</p>"),
        ("quote/body.txt.it.hbs", "Gentile {{company}}"),
    ];

    #[test]
    fn html_escapes_and_text_does_not() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), QUOTE);
        let t = Templates::load(dir.path()).unwrap();
        let data = serde_json::json!({
            "quote": {"number": "Q-1"},
            "company": "<b>A & B</b>",
            "link": "https://x.example/a?b=1&c=2",
        });
        let r = t.render("quote", None, &data).unwrap();
        assert_eq!(r.subject, "Quote Q-1 for <b>A & B</b>");
        assert_eq!(
            r.html,
            "<p>&lt;b&gt;A &amp; B&lt;/b&gt;</p><a href=\"https://x.example/a?b&#x3D;1&amp;c&#x3D;2\">x</a>"
        );
        assert_eq!(r.text, "<b>A & B</b> https://x.example/a?b=1&c=2");
    }

    #[test]
    fn locale_falls_back_to_language_then_default() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), QUOTE);
        let t = Templates::load(dir.path()).unwrap();
        let data = serde_json::json!({"quote": {"number": "Q-1"}, "company": "C", "link": "l"});
        let subject = |l| t.render("quote", l, &data).unwrap().subject;
        assert_eq!(subject(Some("it")), "Offerta Q-1");
        assert_eq!(subject(Some("it-CH")), "Offerta Q-1");
        assert_eq!(subject(Some("en")), "Quote Q-1 for C");
        assert_eq!(subject(None), "Quote Q-1 for C");
    }

    #[test]
    fn a_missing_variable_names_the_template_and_the_variable() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), QUOTE);
        let t = Templates::load(dir.path()).unwrap();
        let e = t
            .render(
                "quote",
                None,
                &serde_json::json!({"company": "C", "link": "l"}),
            )
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "template `quote/subject.hbs`: the variable `quote.number` is missing"
        );
        let e = t.render("nope", None, &serde_json::json!({})).unwrap_err();
        assert!(e.to_string().contains("no e-mail template `nope`"), "{e}");
    }

    #[test]
    fn a_bad_template_refuses_the_load_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), QUOTE);
        write(dir.path(), &[("quote/body.txt.hbs", "Hello {{#if x}}")]);
        let e = Templates::load(dir.path()).unwrap_err();
        assert!(e.to_string().contains("body.txt.hbs"), "{e}");
    }

    #[test]
    fn an_incomplete_locale_refuses_the_load() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), &QUOTE[..5]);
        let e = Templates::load(dir.path()).unwrap_err();
        assert!(e.to_string().contains("missing body.txt.it.hbs"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), &QUOTE[3..]);
        let e = Templates::load(dir.path()).unwrap_err();
        assert!(e.to_string().contains("default (no locale)"), "{e}");
    }
}
