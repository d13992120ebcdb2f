//! `ciclo validate`: check process files the way a deploy would, and say where each problem is.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use ciclo_engine::parse;

/// Collects the YAML files named, or found in the folders named (recursively), in order; a
/// `connectors` folder inside holds connector mappings and is skipped.
fn collect(paths: &[PathBuf], out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    for path in paths {
        if path.is_dir() {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
                .map_err(|e| anyhow::anyhow!("cannot read folder {}: {e}", path.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .collect();
            entries.sort();
            let (dirs, files): (Vec<_>, Vec<_>) = entries.into_iter().partition(|p| p.is_dir());
            // Connector and import mappings (`processes/connectors/erp.yaml`,
            // `processes/imports/`) are not processes.
            let dirs: Vec<PathBuf> = dirs
                .into_iter()
                .filter(|d| !crate::serve::is_not_processes(d))
                .collect();
            out.extend(files.into_iter().filter(|p| is_yaml(p)));
            collect(&dirs, out)?;
        } else {
            out.push(path.clone());
        }
    }
    Ok(())
}

/// The data files a process in `folder` reads: `folder/data/*.yaml`, or, for a process in a
/// sub-folder (`processes/examples/x.yaml`), those of the folder above, as the server deploys
/// them.
fn data_files_near(folder: &Path) -> Vec<(String, String)> {
    let folder = if folder.as_os_str().is_empty() {
        Path::new(".")
    } else {
        folder
    };
    let Some(dir) = std::iter::once(folder.join("data"))
        .chain(folder.parent().map(|p| p.join("data")))
        .find(|d| d.is_dir())
    else {
        return Vec::new();
    };
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| is_yaml(p))
        .collect();
    paths.sort();
    paths
        .into_iter()
        .filter_map(|p| {
            let text = std::fs::read_to_string(&p).ok()?;
            Some((p.display().to_string(), text))
        })
        .collect()
}

fn same_file(a: &str, b: &str) -> bool {
    a == b
        || std::fs::canonicalize(a)
            .ok()
            .is_some_and(|x| std::fs::canonicalize(b).ok() == Some(x))
}

fn is_yaml(p: &Path) -> bool {
    matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"))
}

pub fn run(paths: &[PathBuf]) -> ExitCode {
    let mut files = Vec::new();
    if let Err(e) = collect(paths, &mut files) {
        return crate::fail(2, &e);
    }
    // A file named twice (`d/ d/x.yaml`, `x.yaml ./x.yaml`) is checked once.
    let mut seen = std::collections::HashSet::new();
    files.retain(|f| seen.insert(std::fs::canonicalize(f).unwrap_or_else(|_| f.clone())));
    let mut sources = Vec::new();
    for file in &files {
        match crate::read(file) {
            Ok(text) => sources.push((file.display().to_string(), text)),
            Err(e) => return crate::fail(2, &e),
        }
    }
    // Decision tables may live in other files of the same folders: load those too, so a
    // process that uses them validates on its own, but report only the files asked for.
    let asked: Vec<String> = sources.iter().map(|(f, _)| f.clone()).collect();
    let mut context = sources.clone();
    // Call activities may call any process of these files or of their folders.
    let mut known: std::collections::BTreeSet<String> = sources
        .iter()
        .filter_map(|(_, text)| process_id(text))
        .collect();
    let mut folders: Vec<PathBuf> = files
        .iter()
        .filter_map(|f| f.parent().map(Path::to_path_buf))
        .collect();
    folders.sort();
    folders.dedup();
    for folder in &folders {
        let Ok(entries) = std::fs::read_dir(folder) else {
            continue;
        };
        let mut siblings: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| is_yaml(p))
            .collect();
        siblings.sort();
        for sibling in siblings {
            let name = sibling.display().to_string();
            if asked.contains(&name) {
                continue;
            }
            if let Ok(text) = std::fs::read_to_string(&sibling) {
                match process_id(&text) {
                    Some(id) => {
                        known.insert(id);
                    }
                    None => context.push((name, text)),
                }
            }
        }
    }
    for folder in &folders {
        for (name, text) in data_files_near(folder) {
            if !context.iter().any(|(f, _)| same_file(f, &name)) {
                context.push((name, text));
            }
        }
    }
    let mut catalog = crate::serve::catalog();
    catalog.processes = known;
    catalog.templates = template_names(&folders);
    if let Some(operations) = erp_operations(&folders) {
        catalog.connectors.insert("erp".into(), operations);
    }
    let library = parse::load(&context, &catalog);
    let problems: Vec<_> = library
        .problems
        .iter()
        .filter(|p| asked.contains(&p.file))
        .collect();
    if problems.is_empty() {
        let processes = library
            .definitions
            .iter()
            .filter(|d| asked.contains(&d.file))
            .count();
        println!("ok: {} file(s), {} process(es)", asked.len(), processes);
        return ExitCode::SUCCESS;
    }
    for p in &problems {
        eprintln!("{p}");
    }
    eprintln!("{} problem(s)", problems.len());
    ExitCode::from(1)
}

/// The e-mail templates of the folders' `templates/` subfolders, or their parents' (as the server
/// loads them), so
/// a `send:` naming a missing one is reported before deploying; `None` when no folder has one
/// (a file checked on its own) or one does not load (the server reports that at start).
fn template_names(folders: &[PathBuf]) -> Option<std::collections::BTreeSet<String>> {
    let mut names = std::collections::BTreeSet::new();
    let mut any = false;
    for folder in folders {
        let folder = if folder.as_os_str().is_empty() {
            Path::new(".")
        } else {
            folder.as_path()
        };
        // The server reads `<processes>/templates` and deploys the files of sub-folders too
        // (`processes/examples/x.yaml`), so look next to the file, then one folder up.
        let Some(dir) = std::iter::once(folder.join("templates"))
            .chain(folder.parent().map(|p| p.join("templates")))
            .find(|d| d.is_dir())
        else {
            continue;
        };
        any = true;
        let templates = ciclo_connectors::email::Templates::load(&dir).ok()?;
        names.extend(templates.names().map(str::to_string));
    }
    any.then_some(names)
}

/// The operations of the folders' ERP mapping (`connectors/erp.yaml`, next to the file or one
/// folder up, as the server reads it), so a `call: erp.<operation>` the mapping lacks is
/// reported here and not only when a server with an ERP refuses to start; `None` when no folder
/// has a mapping or one does not load (the server reports that at start).
fn erp_operations(folders: &[PathBuf]) -> Option<Vec<String>> {
    let mut operations = Vec::new();
    let mut any = false;
    for folder in folders {
        let folder = if folder.as_os_str().is_empty() {
            Path::new(".")
        } else {
            folder.as_path()
        };
        let Some(file) = std::iter::once(folder)
            .chain(folder.parent())
            .map(|f| f.join(crate::serve::CONNECTORS_FOLDER).join("erp.yaml"))
            .find(|f| f.is_file())
        else {
            continue;
        };
        any = true;
        let mapping = ciclo_connectors::ErpConfig::load(&file).ok()?;
        operations.extend(mapping.operations().map(str::to_string));
    }
    operations.sort();
    operations.dedup();
    any.then_some(operations)
}

/// The process id a file declares (`process: quote-approval`), read without parsing it.
fn process_id(text: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.strip_prefix("process:"))
        .map(|id| {
            id.split('#')
                .next()
                .unwrap_or("")
                .trim()
                .trim_matches(['"', '\''])
                .to_string()
        })
        .filter(|id| !id.is_empty())
}

/// Loads one process file for drawing or running, with the decision tables and process ids of
/// its folder, as `validate` does.
pub fn load_with_folder(
    file: &Path,
    text: &str,
) -> Result<ciclo_engine::model::Definition, Vec<ciclo_engine::diagnostics::Problem>> {
    let name = file.display().to_string();
    let mut context = vec![(name.clone(), text.to_string())];
    let mut catalog = crate::serve::catalog();
    catalog.processes.extend(process_id(text));
    if let Some(folder) = file.parent()
        && let Ok(entries) = std::fs::read_dir(if folder.as_os_str().is_empty() {
            Path::new(".")
        } else {
            folder
        })
    {
        let mut siblings: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| is_yaml(p))
            .collect();
        siblings.sort();
        for sibling in siblings {
            if std::fs::canonicalize(&sibling).ok() == std::fs::canonicalize(file).ok() {
                continue;
            }
            if let Ok(other) = std::fs::read_to_string(&sibling) {
                match process_id(&other) {
                    Some(id) => {
                        catalog.processes.insert(id);
                    }
                    None => context.push((sibling.display().to_string(), other)),
                }
            }
        }
    }
    if let Some(folder) = file.parent() {
        context.extend(data_files_near(folder));
    }
    let library = parse::load(&context, &catalog);
    let own: Vec<_> = library
        .problems
        .into_iter()
        .filter(|p| p.file == name)
        .collect();
    if !own.is_empty() {
        return Err(own);
    }
    library
        .definitions
        .into_iter()
        .find(|d| d.file == name)
        .ok_or_else(|| {
            vec![ciclo_engine::diagnostics::Problem {
                file: name.clone(),
                line: 1,
                col: 1,
                code: ciclo_engine::parse::codes::NOT_A_PROCESS_FILE,
                message: "this file holds no process (only decision tables?)".into(),
                hint: Some("draw a file that starts with `process: <id>`".into()),
            }]
        })
}
