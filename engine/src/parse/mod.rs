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

/// What a set of files holds.
#[derive(Clone, Debug, Default)]
pub struct Library {
    /// The processes that loaded without problems. Each carries, besides its own tables, a
    /// copy of the tables from other files that its `rules:` steps use, so a deployed version
    /// does not change when a table library changes later.
    pub definitions: Vec<Definition>,
    /// Every decision table of every file.
    pub tables: Vec<DecisionTable>,
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

    for (file, text) in files {
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
        problems,
    }
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
