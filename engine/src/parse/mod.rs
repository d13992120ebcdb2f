//! PLACEHOLDER SIGNATURES ONLY: the language helper replaces this module.

use std::collections::{BTreeMap, BTreeSet};

use crate::diagnostics::Problem;
use crate::model::{DecisionTable, Definition};

#[derive(Clone, Debug, Default)]
pub struct Catalog {
    pub connectors: BTreeMap<String, Vec<String>>,
    pub processes: BTreeSet<String>,
}

impl Catalog {
    pub fn standard() -> Catalog {
        Catalog::default()
    }
}

#[derive(Debug, Default)]
pub struct Library {
    pub definitions: Vec<Definition>,
    pub tables: Vec<DecisionTable>,
    pub problems: Vec<Problem>,
}

pub fn load(_files: &[(String, String)], _catalog: &Catalog) -> Library {
    Library::default()
}
