//! Tests of the process language: valid files parse into the expected model, and every kind of
//! problem is reported with its exact position, code and message.

#[allow(unused_imports)]
use expect_test::{Expect, expect};

use super::*;
use crate::model::*;

const EXAMPLES: &[(&str, &str)] = &[
    (
        "quote-approval.yaml",
        include_str!("../../../processes/examples/quote-approval.yaml"),
    ),
    (
        "order-to-cash.yaml",
        include_str!("../../../processes/examples/order-to-cash.yaml"),
    ),
    (
        "dunning.yaml",
        include_str!("../../../processes/examples/dunning.yaml"),
    ),
    (
        "lead-scoring.yaml",
        include_str!("../../../processes/examples/lead-scoring.yaml"),
    ),
    (
        "lead-tables.yaml",
        include_str!("../../../processes/examples/lead-tables.yaml"),
    ),
];

fn examples() -> Vec<(String, String)> {
    EXAMPLES
        .iter()
        .map(|(n, t)| (n.to_string(), t.to_string()))
        .collect()
}

fn render(problems: &[Problem]) -> String {
    let mut out = String::new();
    for p in problems {
        out.push_str(&p.to_string());
        out.push('\n');
    }
    out
}

/// Loads `yaml` as `p.yaml` with the standard catalog and compares the problems' text.
#[allow(dead_code)]
fn check(yaml: &str, expected: Expect) {
    let library = load(
        &[("p.yaml".to_string(), unindent(yaml))],
        &Catalog::standard(),
    );
    expected.assert_eq(&render(&library.problems));
}

/// Test YAML is written indented inside Rust strings; take the common indentation off.
fn unindent(text: &str) -> String {
    let text = text.strip_prefix('\n').unwrap_or(text);
    let indent = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.len() - l.trim_start().len())
        .min()
        .unwrap_or(0);
    text.lines()
        .map(|l| {
            if l.len() >= indent {
                &l[indent..]
            } else {
                l.trim_start()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

fn parse_ok(yaml: &str) -> Definition {
    match load_one("p.yaml", &unindent(yaml), &Catalog::standard()) {
        Ok(def) => def,
        Err(problems) => panic!("unexpected problems:\n{}", render(&problems)),
    }
}

#[test]
fn examples_load_without_problems() {
    let library = load(&examples(), &Catalog::standard());
    assert_eq!(render(&library.problems), "");
    assert_eq!(library.definitions.len(), 4);
    let names: Vec<&str> = library.tables.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["discount-band", "lead-fit", "lead-points"]);
}

#[test]
fn quote_approval_model() {
    let library = load(&examples(), &Catalog::standard());
    let def = library
        .definitions
        .iter()
        .find(|d| d.id == "quote-approval")
        .unwrap();
    assert_eq!(def.name.as_deref(), Some("Approve a discounted quote"));
    assert_eq!(
        def.inputs,
        vec![("quote".to_string(), "object".to_string())]
    );
    assert_eq!(def.starts.len(), 1);
    assert_eq!(def.starts[0].target.name, "check");
    assert!(matches!(def.starts[0].trigger, StartTrigger::None));

    let manager = def.step_by_name("manager").unwrap();
    let StepKind::User(task) = &manager.kind else {
        panic!("manager is a user task")
    };
    assert_eq!(task.title.source(), "Approve quote {{quote.number}}");
    assert_eq!(task.candidates, ["sales-managers"]);
    assert_eq!(task.form.len(), 2);
    assert_eq!(
        task.form[0].kind,
        FieldKind::Choice(vec!["approve".into(), "reject".into()])
    );
    assert!(!task.form[1].required);
    assert_eq!(task.due.as_ref().unwrap().source(), "P2D");
    assert_eq!(manager.boundary.len(), 2);
    assert!(!manager.boundary[0].interrupting);
    assert_eq!(manager.boundary[0].target.name, "remind-manager");
    let BoundaryEvent::Timer(every) = &manager.boundary[0].event else {
        panic!()
    };
    assert_eq!(every.source(), "R/P1D");
    assert!(manager.boundary[1].interrupting);
    let Next::Choose(choice) = &manager.next else {
        panic!("manager has then")
    };
    assert_eq!(choice.branches.len(), 1);
    assert_eq!(choice.branches[0].when.source(), "decision == \"approve\"");
    assert_eq!(choice.otherwise.as_ref().unwrap().name, "revise");
    assert_eq!(manager.span, Span { line: 29, col: 3 });

    let book = def.step_by_name("book").unwrap();
    let StepKind::Service {
        connector,
        operation,
        input,
        output,
        retry,
    } = &book.kind
    else {
        panic!()
    };
    assert_eq!(
        (connector.as_str(), operation.as_str()),
        ("erp", "create-order")
    );
    assert_eq!(input[0].target, "order");
    assert_eq!(output[0].value.source(), "result.number");
    assert_eq!(retry.max_attempts, 5);
    assert_eq!(retry.max_backoff, jiff::SignedDuration::from_secs(300));
    let BoundaryEvent::Error { code } = &book.boundary[0].event else {
        panic!()
    };
    assert_eq!(code.as_deref(), Some("CUSTOMER_BLOCKED"));

    let revise = def.step_by_name("revise").unwrap();
    let StepKind::User(task) = &revise.kind else {
        panic!()
    };
    assert_eq!(task.assignee.as_ref().unwrap().source(), "{{quote.owner}}");
    assert_eq!(
        task.form[0].kind,
        FieldKind::Number {
            min: Some("0".parse().unwrap()),
            max: Some("0.5".parse().unwrap())
        }
    );

    let blocked = def.step_by_name("blocked").unwrap();
    let StepKind::End(EndKind::Error { code, message }) = &blocked.kind else {
        panic!()
    };
    assert_eq!(code, "CUSTOMER_BLOCKED");
    assert!(message.is_some());

    let table = def.table("discount-band").unwrap();
    assert_eq!(table.hit, HitPolicy::First);
    assert_eq!(table.rules.len(), 3);
    assert_eq!(table.rules[0].when[0].source(), "> 0.20");
    assert_eq!(table.rules[0].then[0].source(), "\"director\"");
}

#[test]
fn order_to_cash_model() {
    let library = load(&examples(), &Catalog::standard());
    let def = library
        .definitions
        .iter()
        .find(|d| d.id == "order-to-cash")
        .unwrap();
    assert_eq!(def.starts.len(), 2);
    assert!(
        matches!(&def.starts[1].trigger, StartTrigger::Message { name } if name == "order-placed")
    );

    let validate = def.step_by_name("validate").unwrap();
    let StepKind::Subprocess { start } = &validate.kind else {
        panic!()
    };
    assert_eq!(start.name, "check-lines");
    let inner: Vec<&str> = def
        .children(Some(validate.id))
        .map(|s| s.name.as_str())
        .collect();
    assert_eq!(inner, ["check-lines", "sum"]);
    let check = def.step_by_name("check-lines").unwrap();
    let multi = check.multi.as_ref().unwrap();
    assert!(!multi.parallel);
    assert_eq!(multi.item_var, "line");
    assert_eq!(multi.items.source(), "order.lines");
    assert_eq!(multi.collect.as_ref().unwrap().target, "totals");
    assert!(matches!(
        validate.boundary[0].event,
        BoundaryEvent::Error { code: None }
    ));

    let StepKind::Parallel { branches } = &def.step_by_name("prepare").unwrap().kind else {
        panic!()
    };
    assert_eq!(
        branches.iter().map(|b| b.name.as_str()).collect::<Vec<_>>(),
        ["render", "notify"]
    );
    assert!(matches!(
        def.step_by_name("joined").unwrap().kind,
        StepKind::Join { inclusive: false }
    ));
    assert!(matches!(
        def.step_by_name("closed").unwrap().kind,
        StepKind::Join { inclusive: true }
    ));
    assert!(matches!(
        def.step_by_name("extras").unwrap().kind,
        StepKind::Inclusive(_)
    ));

    let dun = def.step_by_name("dun").unwrap();
    let StepKind::CallProcess {
        process,
        input,
        output,
    } = &dun.kind
    else {
        panic!()
    };
    assert_eq!(process, "dunning");
    assert_eq!((input.len(), output.len()), (1, 1));
    assert_eq!(dun.boundary.len(), 3);
    assert!(dun.boundary[0].interrupting && !dun.boundary[1].interrupting);
    let BoundaryEvent::Message(message) = &dun.boundary[2].event else {
        panic!()
    };
    assert_eq!(message.key.as_ref().unwrap().source(), "order.number");

    let StepKind::Wait {
        event: CatchEvent::Timer(cron),
    } = &def.step_by_name("thank-you").unwrap().kind
    else {
        panic!()
    };
    assert_eq!(cron.source(), "0 9 * * MON");
    let StepKind::Wait {
        event: CatchEvent::Message(paid),
    } = &def.step_by_name("paid").unwrap().kind
    else {
        panic!()
    };
    assert_eq!(paid.name, "payment-received");
    assert!(matches!(
        def.step_by_name("write-off").unwrap().kind,
        StepKind::End(EndKind::Terminate)
    ));
    assert!(matches!(
        def.step_by_name("cancelled").unwrap().kind,
        StepKind::End(EndKind::None)
    ));
    assert!(matches!(def.step_by_name("alert").unwrap().next, Next::End));
}

#[test]
fn tables_from_another_file_are_copied_into_the_definition() {
    let library = load(&examples(), &Catalog::standard());
    let def = library
        .definitions
        .iter()
        .find(|d| d.id == "lead-scoring")
        .unwrap();
    let fit = def.table("lead-fit").unwrap();
    assert_eq!(fit.rules[0].when[0].source(), "\"IT\", \"SM\"");
    assert_eq!(fit.rules[0].then[0].source(), "30");
    assert_eq!(def.table("lead-points").unwrap().hit, HitPolicy::CollectSum);
    let StartTrigger::Timer { schedule } = &def.starts[1].trigger else {
        panic!()
    };
    assert_eq!(schedule.source(), "0 9 * * MON-FRI");
}

#[test]
fn default_start_is_the_first_step_and_literals_stay_literal() {
    let def = parse_ok(
        r#"
        process: p
        steps:
          a:
            set: { n: 1.50, ok: true, word: NO, text: '"approved"', big: 1e3 }
        "#,
    );
    assert_eq!(def.starts[0].target.name, "a");
    let StepKind::Script { assignments } = &def.steps[0].kind else {
        panic!()
    };
    let sources: Vec<&str> = assignments.iter().map(|a| a.value.source()).collect();
    assert_eq!(sources, ["1.50", "true", "NO", "\"approved\"", "1000"]);
}
