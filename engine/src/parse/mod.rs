//! The process language: reads YAML process files and decision-table libraries into
//! `model::Definition`s, with every problem reported as `FILE:LINE:COL: CODE message` and a
//! hint.
//!
//! `load` is what the CLI and the server call: it parses every file, then checks each process
//! against the connector catalog and the decision tables of all the files (`validate`). Only
//! definitions without problems come back, so the runtime never sees a dangling reference.
//! docs/process-language.md describes the language; docs/errors.md the codes.

mod build;
pub mod codes;
pub mod keys;
mod schema;
pub mod suggest;
mod yaml;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};

pub use schema::json_schema;

use crate::diagnostics::Problem;
use crate::model::{DecisionTable, Definition, StepKind};
pub use crate::validate::Catalog;
use crate::validate::{self, Reference};
use crate::value::Value;

/// What a set of files holds.
#[derive(Clone, Debug, Default)]
pub struct Library {
    /// The processes that loaded without problems. Each carries, besides its own tables, a
    /// copy of the tables from other files that its `rules:` steps use, so a deployed version
    /// does not change when a table library changes later.
    pub definitions: Vec<Definition>,
    /// Every decision table of every file.
    pub tables: Vec<DecisionTable>,
    /// Every data file that loaded, by its name in expressions (`data.price_list`).
    pub data: BTreeMap<String, Value>,
    /// Every problem, sorted by file, line and column.
    pub problems: Vec<Problem>,
}

/// Parses and checks `files` (name, text) together.
pub fn load(files: &[(String, String)], catalog: &Catalog) -> Library {
    let mut problems: Vec<Problem> = Vec::new();
    let mut processes: Vec<(Definition, Vec<Reference>)> = Vec::new();
    let mut tables: Vec<DecisionTable> = Vec::new();
    let mut table_files: BTreeMap<String, String> = BTreeMap::new();

    let mut add_table = |table: DecisionTable,
                         file: &str,
                         problems: &mut Vec<Problem>,
                         tables: &mut Vec<DecisionTable>| {
        if let Some(first) = table_files.get(&table.name) {
            problems.push(Problem {
                file: file.to_string(),
                line: table.span.line,
                col: table.span.col,
                code: codes::DUPLICATE_NAME,
                message: format!(
                    "decision table `{}` is already declared in {first}",
                    table.name
                ),
                hint: Some("table names are shared by all files: rename one of them".into()),
            });
        } else {
            table_files.insert(table.name.clone(), file.to_string());
            tables.push(table);
        }
    };

    let mut data: BTreeMap<String, Value> = BTreeMap::new();
    let mut data_files: BTreeMap<String, String> = BTreeMap::new();
    for (file, text) in files {
        if let Some(name) = data_name(file) {
            let (value, file_problems) = build::parse_data_file(file, text);
            problems.extend(file_problems);
            let refuse = |message: String, hint: &str| Problem {
                file: file.clone(),
                line: 1,
                col: 1,
                code: codes::DUPLICATE_NAME,
                message,
                hint: Some(hint.into()),
            };
            if !is_data_name(&name) {
                let mut problem = refuse(
                    format!("`{name}` cannot be a name in expressions"),
                    "name data files with lowercase letters, digits, `-` and `_`, starting with a letter",
                );
                problem.code = codes::INVALID_VALUE;
                problems.push(problem);
            } else if let Some(first) = data_files.get(&name) {
                problems.push(refuse(
                    format!("data file `data.{name}` is already {first}"),
                    "`-` and `_` in a data file's name are the same: rename one of them",
                ));
            } else if let Some(value) = value {
                data_files.insert(name.clone(), file.clone());
                data.insert(name, value);
            }
            continue;
        }
        let (parsed, file_problems) = build::parse_file(file, text);
        problems.extend(file_problems);
        match parsed {
            build::Parsed::Process {
                definition,
                references,
            } => {
                for table in &definition.tables {
                    add_table(table.clone(), file, &mut problems, &mut tables);
                }
                processes.push((*definition, references));
            }
            build::Parsed::Tables(list) => {
                for table in list {
                    add_table(table, file, &mut problems, &mut tables);
                }
            }
            build::Parsed::Nothing => {}
        }
    }

    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    for (def, _) in &processes {
        if def.id.is_empty() {
            continue;
        }
        if let Some(first) = seen.get(&def.id) {
            problems.push(Problem {
                file: def.file.clone(),
                line: def.span.line,
                col: def.span.col,
                code: codes::DUPLICATE_NAME,
                message: format!("process `{}` is already declared in {first}", def.id),
                hint: Some("each process id is declared by one file".into()),
            });
        } else {
            seen.insert(def.id.clone(), def.file.clone());
        }
    }

    // Call activities may name any process of this load as well as the catalog's.
    let mut catalog = catalog.clone();
    if !catalog.processes.is_empty() {
        catalog.processes.extend(seen.keys().cloned());
    }
    let table_names: BTreeSet<String> = tables.iter().map(|t| t.name.clone()).collect();
    for (def, references) in &mut processes {
        problems.extend(data_references(def, references, &data));
        problems.extend(validate::references(
            def,
            references,
            &catalog,
            &table_names,
        ));
        problems.extend(validate::graph(def));
        let used: BTreeSet<String> = def
            .steps
            .iter()
            .filter_map(|s| match &s.kind {
                StepKind::Rules { table, .. } => Some(table.clone()),
                _ => None,
            })
            .collect();
        for name in used {
            if def.table(&name).is_none()
                && let Some(table) = tables.iter().find(|t| t.name == name)
            {
                def.tables.push(table.clone());
            }
        }
    }

    problems.sort_by(|a, b| (&a.file, a.line, a.col).cmp(&(&b.file, b.line, b.col)));
    let failed: BTreeSet<&str> = problems.iter().map(|p| p.file.as_str()).collect();
    let definitions = processes
        .into_iter()
        .map(|(d, _)| d)
        .filter(|d| !failed.contains(d.file.as_str()))
        .collect();
    Library {
        definitions,
        tables,
        data,
        problems,
    }
}

/// The name under which expressions read a data file, when `file` is one: a YAML file in a
/// folder called `data` (`processes/data/price-list.yaml`), named by its stem with `-` read
/// as `_` (`data.price_list`).
pub fn data_name(file: &str) -> Option<String> {
    let mut parts = file.rsplit(['/', '\\']);
    let base = parts.next()?;
    if parts.next()? != "data" {
        return None;
    }
    let stem = base
        .strip_suffix(".yaml")
        .or_else(|| base.strip_suffix(".yml"))?;
    Some(stem.replace('-', "_"))
}

fn is_data_name(name: &str) -> bool {
    name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// Checks the `data.<name>` references of `def` and copies the data files it reads into it:
/// the named ones, or all of them when it uses `data` in a way that names none.
fn data_references(
    def: &mut Definition,
    references: &[Reference],
    data: &BTreeMap<String, Value>,
) -> Vec<Problem> {
    let mut problems = Vec::new();
    let mut used = BTreeMap::new();
    let mut uses_data = false;
    for reference in references {
        let Reference::Data { name, span } = reference else {
            continue;
        };
        uses_data = true;
        match name {
            None => used.extend(data.iter().map(|(k, v)| (k.clone(), v.clone()))),
            Some(name) => match data.get(name) {
                Some(value) => {
                    used.insert(name.clone(), value.clone());
                }
                None => {
                    let hint = suggest::did_you_mean(name, data.keys().map(String::as_str))
                        .map(|s| format!("did you mean `data.{s}`?"))
                        .unwrap_or_else(|| {
                            format!(
                                "add the file data/{}.yaml to the process folder",
                                name.replace('_', "-")
                            )
                        });
                    problems.push(Problem {
                        file: def.file.clone(),
                        line: span.line,
                        col: span.col,
                        code: codes::UNKNOWN_DATA,
                        message: format!("no data file `data.{name}`"),
                        hint: Some(hint),
                    });
                }
            },
        }
    }
    if uses_data {
        def.data = Value::Map(used);
    }
    problems
}

/// Parses and checks a single process file.
pub fn load_one(file: &str, text: &str, catalog: &Catalog) -> Result<Definition, Vec<Problem>> {
    let mut library = load(&[(file.to_string(), text.to_string())], catalog);
    if !library.problems.is_empty() {
        return Err(library.problems);
    }
    match library.definitions.pop() {
        Some(definition) => Ok(definition),
        None => Err(vec![Problem {
            file: file.to_string(),
            line: 1,
            col: 1,
            code: codes::NOT_A_PROCESS_FILE,
            message: "this file holds no process".into(),
            hint: Some("a process file starts with `process: <id>`".into()),
        }]),
    }
}
