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
        include_str!("fixtures/order-to-cash.yaml"),
    ),
    ("dunning.yaml", include_str!("fixtures/dunning.yaml")),
    (
        "lead-intake.yaml",
        include_str!("../../../processes/lead-intake.yaml"),
    ),
    (
        "lead-scoring.yaml",
        include_str!("../../../processes/lead-scoring.yaml"),
    ),
    (
        "lead-assignment.yaml",
        include_str!("../../../processes/lead-assignment.yaml"),
    ),
    (
        "data/sales-teams.yaml",
        include_str!("../../../processes/data/sales-teams.yaml"),
    ),
    (
        "lead-nurture.yaml",
        include_str!("../../../processes/lead-nurture.yaml"),
    ),
    (
        "data/nurture-sequence.yaml",
        include_str!("../../../processes/data/nurture-sequence.yaml"),
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
    assert_eq!(library.definitions.len(), 6);
    let mut names: Vec<&str> = library.tables.iter().map(|t| t.name.as_str()).collect();
    names.sort();
    assert_eq!(
        names,
        [
            "discount-band",
            "lead-engagement",
            "lead-fit",
            "lead-grade",
            "lead-routing"
        ]
    );
}

#[test]
fn quote_approval_model() {
    let library = load(&examples(), &Catalog::standard());
    let def = library
        .definitions
        .iter()
        .find(|d| d.id == "quote-approval-example")
        .unwrap();
    assert_eq!(
        def.name.as_deref(),
        Some("Approve a discounted quote (example)")
    );
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
    assert_eq!(manager.boundary.len(), 3);
    let email = task.email.as_ref().expect("manager has email:");
    assert_eq!(
        (email.template.as_str(), email.field.as_str()),
        ("approval-request", "decision")
    );
    assert_eq!(def.step(email.step).name, "manager.email");
    assert_eq!(manager.boundary[2].target.name, "manager.email");
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
        .find(|d| d.id == "lead-intake")
        .unwrap();
    // The scoring tables come from lead-scoring.yaml; a table of another process does not.
    assert_eq!(def.table("lead-fit").unwrap().hit, HitPolicy::CollectSum);
    assert_eq!(
        def.table("lead-engagement").unwrap().hit,
        HitPolicy::CollectSum
    );
    let grade = def.table("lead-grade").unwrap();
    assert_eq!(grade.hit, HitPolicy::First);
    assert_eq!(grade.rules[2].when[0].source(), "-");
    assert!(def.table("lead-routing").is_none());
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

#[test]
fn yaml_syntax_error() {
    check(
        r#"
        process: p
        steps:
          a: { set: { x: 1 }
        "#,
        expect![[r#"
            p.yaml:5:1: CICLO-E0101 YAML syntax error: while parsing a flow mapping, did not find expected ',' or '}'
        "#]],
    );
}

#[test]
fn bare_template_in_flow_text_is_a_syntax_error_with_a_hint() {
    check(
        r#"
        process: p
        steps:
          a:
            task: {{ quote.number }} approval
        "#,
        expect![[r#"
            p.yaml:4:30: CICLO-E0101 YAML syntax error: while parsing a block mapping, did not find expected key
              hint: a value with {{ }} that starts with `{` must be in quotes: "{{ x }} ..."
        "#]],
    );
}

#[test]
fn bare_template_read_as_a_map() {
    check(
        r#"
        process: p
        steps:
          a:
            task: {{ quote.number }}
            assignee: {{owner}}
        "#,
        expect![[r#"
            p.yaml:4:11: CICLO-E0106 this looks like a template but YAML read it as a map; put it in quotes: "{{ quote.number }}"
            p.yaml:5:15: CICLO-E0106 this looks like a template but YAML read it as a map; put it in quotes: "{{ owner }}"
        "#]],
    );
}

#[test]
fn unknown_keys_suggest_the_closest() {
    check(
        r#"
        process: p
        stpes: {}
        steps:
          a:
            task: Approve
            cadidates: [sales]
            on:
              - eror: any
                goto: a
        "#,
        expect![[r#"
            p.yaml:2:1: CICLO-E0103 unknown key `stpes` in the process
              hint: did you mean `steps`?
            p.yaml:6:5: CICLO-E0103 unknown key `cadidates` in step `a`
              hint: did you mean `candidates`?
            p.yaml:8:9: CICLO-E0103 unknown key `eror` in this boundary event
              hint: did you mean `error`?
        "#]],
    );
}

#[test]
fn a_key_of_another_kind() {
    check(
        r#"
        process: p
        steps:
          a:
            call: erp.create-order
            assignee: bob
        "#,
        expect![[r#"
            p.yaml:5:5: CICLO-E0103 `assignee` does not belong to a `call` step
              hint: `assignee` belongs to `task` steps
        "#]],
    );
}

#[test]
fn missing_keys() {
    check(
        r#"
        steps:
          a:
            send: quote-email
          b:
            rules: lead-fit
        tables:
          lead-fit:
            inputs: [x]
            rules: []
        "#,
        expect![[r#"
            p.yaml:1:1: CICLO-E0104 the process needs `process`
              hint: the process id: lowercase letters, digits, `-` and `_`
            p.yaml:2:3: CICLO-E0104 step `a` needs `to`
              hint: the recipient's address, an expression
            p.yaml:4:3: CICLO-E0104 step `b` needs `result`
              hint: the variable that receives the table's result
            p.yaml:4:3: CICLO-E0117 step `b` is never reached
              hint: add `goto: b` to a step that should lead here, or remove it
            p.yaml:8:5: CICLO-E0104 table `lead-fit` needs `outputs`
              hint: output names, one per output column
        "#]],
    );
}

#[test]
fn wrong_value_types() {
    check(
        r#"
        process: p
        steps:
          a:
            set: [x, y]
            on: { error: any }
            goto: [b]
          b:
            task: Check
            form: { ok: { type: boolean, required: maybe } }
            retry: 3
        "#,
        expect![[r#"
            p.yaml:4:10: CICLO-E0105 `set` should be a map of names to expressions, found a list
            p.yaml:5:9: CICLO-E0105 `on` should be a list of events such as `- error: any` with `goto`, found a map
            p.yaml:6:11: CICLO-E0105 a step name should be a text, found a list
            p.yaml:9:44: CICLO-E0105 `required` should be true or false, found a text
            p.yaml:10:5: CICLO-E0103 `retry` does not belong to a `task` step
              hint: `retry` belongs to `call` steps
        "#]],
    );
}

#[test]
fn invalid_values() {
    check(
        r#"
        process: Quote Approval
        steps:
          a:
            call: erp
            retry: { attempts: 0, backoff: soon }
            goto: b
          b:
            join: some
            goto: c
          c:
            task: Fill in
            form: { amount: nunber }
            goto: d
          d: { end: false }
        "#,
        expect![[r#"
            p.yaml:1:10: CICLO-E0107 `Quote Approval` is not a valid process id
              hint: use lowercase letters, digits, `-` and `_`, such as `quote-approval`
            p.yaml:4:11: CICLO-E0107 `erp` does not name a connector operation
              hint: write `connector.operation`, such as `erp.create-order`
            p.yaml:5:24: CICLO-E0107 `attempts` is a whole number, at least 1
            p.yaml:5:36: CICLO-E0107 `soon` is not a duration in hours, minutes or seconds
              hint: write it like PT1S, PT5M or PT2H
            p.yaml:8:11: CICLO-E0107 `join` is `all` or `any`
              hint: `all` waits for every incoming path; `any` for the paths that can still arrive
            p.yaml:12:21: CICLO-E0107 unknown field type `nunber`
              hint: did you mean `number`?
            p.yaml:14:13: CICLO-E0107 `end` is `true`, `terminate` or `{ error: CODE }`, found `false`
        "#]],
    );
}

#[test]
fn unknown_step_with_suggestion() {
    check(
        r#"
        process: p
        steps:
          approve:
            task: Approve
            goto: sned
          send:
            send: quote-email
            to: quote.email
        "#,
        expect![[r#"
            p.yaml:5:11: CICLO-E0114 there is no step named `sned`
              hint: did you mean `send`?
        "#]],
    );
}

#[test]
fn unreachable_step() {
    check(
        r#"
        process: p
        start: a
        steps:
          a: { set: { x: 1 } }
          orphan: { set: { x: 2 } }
          group:
            subprocess:
              steps: { inner: { set: { y: 1 } } }
        "#,
        expect![[r#"
            p.yaml:5:3: CICLO-E0117 step `orphan` is never reached
              hint: add `goto: orphan` to a step that should lead here, or remove it
            p.yaml:6:3: CICLO-E0117 step `group` is never reached
              hint: add `goto: group` to a step that should lead here, or remove it
        "#]],
    );
}

#[test]
fn a_loop_without_exit_never_ends() {
    check(
        r#"
        process: p
        steps:
          a:
            set: { n: n + 1 }
            goto: b
          b:
            wait: P1D
            goto: a
        "#,
        expect![[r#"
            p.yaml:3:3: CICLO-E0118 the flow can never end from step `a`: `a`, `b` loop without a way out
              hint: give the loop an exit: a `then` or `decide` branch, or an `otherwise`, that leads to an end
        "#]],
    );
}

#[test]
fn exclusive_choice_without_otherwise() {
    check(
        r#"
        process: p
        steps:
          check:
            decide:
              - when: score > 100
                goto: high
              - when: score > 50
                goto: low
          high:
            task: Look at it
            then:
              - when: ok
                goto: low
          low: { end: true }
        "#,
        expect![[r#"
            p.yaml:4:5: CICLO-E0119 `decide` in step `check` has no `otherwise`: when no condition is true the instance gets stuck
              hint: add `- otherwise: <step>` as the last entry, for example `- otherwise: high`
            p.yaml:11:5: CICLO-E0119 `then` in step `high` has no `otherwise`: when no condition is true the instance gets stuck
              hint: add `- otherwise: <step>` as the last entry, for example `- otherwise: low`
        "#]],
    );
}

#[test]
fn duplicate_steps_and_duplicate_keys() {
    check(
        r#"
        process: p
        steps:
          a:
            set: { x: 1 }
            goto: b
            goto: c
          b:
            subprocess:
              steps:
                a: { set: { y: 1 } }
          c: { end: true }
        "#,
        expect![[r#"
            p.yaml:6:5: CICLO-E0102 duplicate key `goto` (first at line 5)
              hint: remove one of them: YAML would silently keep only one
            p.yaml:10:9: CICLO-E0113 a step named `a` already exists (line 3)
              hint: step names must be unique in the whole file, sub-processes included
            p.yaml:11:3: CICLO-E0117 step `c` is never reached
              hint: add `goto: c` to a step that should lead here, or remove it
        "#]],
    );
}

#[test]
fn goto_out_of_and_into_a_subprocess() {
    check(
        r#"
        process: p
        steps:
          a:
            set: { x: 1 }
            goto: inner
          group:
            subprocess:
              steps:
                inner:
                  set: { y: 1 }
                  goto: outside
          outside: { end: true }
        "#,
        expect![[r#"
            p.yaml:5:11: CICLO-E0116 `inner` is inside sub-process `group`: a path cannot jump into it
              hint: `goto: group` and let the sub-process's `start` choose its first step
            p.yaml:6:3: CICLO-E0117 step `group` is never reached
              hint: add `goto: group` to a step that should lead here, or remove it
            p.yaml:11:17: CICLO-E0115 `outside` is outside this sub-process: a path cannot jump out of it
              hint: end the path inside the sub-process and `goto` from the sub-process step
        "#]],
    );
}

#[test]
fn two_kinds_or_none() {
    check(
        r#"
        process: p
        steps:
          a:
            task: Approve
            call: erp.create-order
            goto: b
          b:
            label: Nothing here
            goto: c
          c:
            tsk: Do it
          d:
        "#,
        expect![[r#"
            p.yaml:5:5: CICLO-E0111 step `a` has two kinds, `task` and `call`
              hint: a step does one thing: split it into two steps joined by `goto`
            p.yaml:7:3: CICLO-E0110 step `b` does not say what it does
              hint: give it one of: `set`, `call`, `send`, `task`, `rules`, `receive`, `wait`, `process`, `decide`, `parallel`, `branch`, `join`, `race`, `subprocess`, `end`
            p.yaml:11:5: CICLO-E0103 unknown key `tsk` in step `c`
              hint: did you mean `task`?
            p.yaml:12:3: CICLO-E0110 step `d` is empty
              hint: give it one of: `set`, `call`, `send`, `task`, `rules`, `receive`, `wait`, `process`, `decide`, `parallel`, `branch`, `join`, `race`, `subprocess`, `end`
            p.yaml:12:3: CICLO-E0117 step `d` is never reached
              hint: add `goto: d` to a step that should lead here, or remove it
        "#]],
    );
}

#[test]
fn goto_with_then_and_goto_on_gateways() {
    check(
        r#"
        process: p
        steps:
          a:
            set: { x: 1 }
            goto: c
            then:
              - when: x > 1
                goto: c
              - otherwise: c
          b:
            parallel: [c]
            goto: c
          c:
            end: true
            goto: a
        "#,
        expect![[r#"
            p.yaml:6:5: CICLO-E0112 a step has either `goto` or `then`, not both
              hint: put the default path in `then` as `- otherwise: <step>`
            p.yaml:10:3: CICLO-E0117 step `b` is never reached
              hint: add `goto: b` to a step that should lead here, or remove it
            p.yaml:12:5: CICLO-E0112 `goto` does not apply here: a `parallel` step names its targets itself
              hint: remove `goto`
            p.yaml:13:3: CICLO-E0117 step `c` is never reached
              hint: add `goto: c` to a step that should lead here, or remove it
            p.yaml:15:5: CICLO-E0112 `goto` does not apply here: an `end` step ends its path
              hint: remove `goto`
        "#]],
    );
}

#[test]
fn unknown_connector_operation_table_and_process() {
    let yaml = unindent(
        r#"
        process: p
        steps:
          a:
            call: erpp.create-order
            goto: b
          b:
            call: einvoice.rendr
            goto: c
          c:
            rules: lead-fitt
            result: fit
            goto: d
          d:
            process: duning
        tables:
          lead-fit:
            inputs: [x]
            outputs: [y]
            rules: [{ when: [1], then: [2] }]
        "#,
    );
    let mut catalog = Catalog::standard();
    catalog.processes.insert("dunning".into());
    let library = load(&[("p.yaml".into(), yaml)], &catalog);
    expect![[r#"
        p.yaml:4:11: CICLO-E0130 unknown connector `erpp`
          hint: did you mean `erp`?
        p.yaml:7:20: CICLO-E0131 connector `einvoice` has no operation `rendr`
          hint: did you mean `render`?
        p.yaml:10:12: CICLO-E0132 unknown decision table `lead-fitt`
          hint: did you mean `lead-fit`?
        p.yaml:14:14: CICLO-E0133 unknown process `duning`
          hint: did you mean `dunning`?
    "#]]
    .assert_eq(&render(&library.problems));
}

#[test]
fn decision_table_shape() {
    check(
        r#"
        tables:
          t:
            hit: firts
            inputs: [a, b]
            outputs: [x, y]
            rules:
              - when: [1]
                then: [1, 2]
              - when: [1, 2]
                then: [3]
        "#,
        expect![[r#"
            p.yaml:3:10: CICLO-E0107 unknown hit policy `firts`
              hint: did you mean `first`?
            p.yaml:7:15: CICLO-E0123 this rule has 1 `when` cell but the table has 2 inputs
              hint: write one cell per input; `-` matches anything
            p.yaml:10:15: CICLO-E0123 this rule has 1 `then` value but the table has 2 outputs
              hint: write one expression per output
        "#]],
    );
}

#[test]
fn boundary_events_and_multi_instance_only_on_activities() {
    check(
        r#"
        process: p
        steps:
          a:
            decide:
              - when: x
                goto: b
              - otherwise: b
            on: [{ error: any, goto: b }]
          b:
            wait: P1D
            each: { in: xs, as: x }
        "#,
        expect![[r#"
            p.yaml:8:5: CICLO-E0135 `on` applies to tasks and sub-processes, not to a `decide` step
            p.yaml:11:5: CICLO-E0135 `each` applies to tasks and sub-processes, not to a `wait` step
        "#]],
    );
}

#[test]
fn boundary_event_rules() {
    check(
        r#"
        process: p
        steps:
          a:
            call: erp.create-order
            on:
              - error: any
                interrupt: false
                goto: b
              - timer: PT1H
                message: m
                goto: b
              - goto: b
          b: { end: true }
        "#,
        expect![[r#"
            p.yaml:7:9: CICLO-E0107 an error always interrupts the step
              hint: remove `interrupt: false`
            p.yaml:10:9: CICLO-E0107 a boundary event has one trigger, found `timer` and `message`
              hint: write one event per list entry
            p.yaml:12:9: CICLO-E0104 this boundary event needs `error`, `timer`, `every` or `message`
        "#]],
    );
}

#[test]
fn unknown_time_zone() {
    // Without a time-zone database on the machine the check cannot run; the test then only
    // asserts that nothing else is reported.
    let has_db = jiff::tz::db().available().next().is_some();
    let library = load(
        &[(
            "p.yaml".into(),
            "process: p\nzone: Europe/Roma\nsteps:\n  a: { wait: P1D }\n".into(),
        )],
        &Catalog::standard(),
    );
    let text = render(&library.problems);
    if has_db {
        expect![[r#"
            p.yaml:2:7: CICLO-E0127 unknown time zone `Europe/Roma`
              hint: did you mean `Europe/Rome`?
        "#]]
        .assert_eq(&text);
    } else {
        assert_eq!(text, "");
    }
}

#[test]
fn files_that_are_not_processes() {
    let library = load(
        &[
            ("empty.yaml".into(), "".into()),
            ("list.yaml".into(), "- a\n- b\n".into()),
            ("other.yaml".into(), "name: x\n".into()),
        ],
        &Catalog::standard(),
    );
    expect![[r#"
        empty.yaml:1:1: CICLO-E0108 the file is empty
          hint: a process file starts with `process: <id>`; a table library has only `tables:`
        list.yaml:1:1: CICLO-E0108 a process file is a map of keys, found a list
          hint: a process file starts with `process: <id>`; a table library has only `tables:`
        other.yaml:1:1: CICLO-E0108 this file is neither a process nor a table library
          hint: a process file starts with `process: <id>`; a table library has only `tables:`
    "#]]
    .assert_eq(&render(&library.problems));
}

#[test]
fn duplicate_process_ids_and_table_names_across_files() {
    let a = "process: p\ntables:\n  t: { inputs: [x], outputs: [y], rules: [] }\nsteps:\n  a: { end: true }\n";
    let b = "tables:\n  t: { inputs: [x], outputs: [y], rules: [] }\n";
    let library = load(
        &[
            ("a.yaml".into(), a.into()),
            ("b.yaml".into(), b.into()),
            ("c.yaml".into(), a.into()),
        ],
        &Catalog::standard(),
    );
    expect![[r#"
        b.yaml:2:3: CICLO-E0134 decision table `t` is already declared in a.yaml
          hint: table names are shared by all files: rename one of them
        c.yaml:1:1: CICLO-E0134 process `p` is already declared in a.yaml
          hint: each process id is declared by one file
        c.yaml:3:3: CICLO-E0134 decision table `t` is already declared in a.yaml
          hint: table names are shared by all files: rename one of them
    "#]]
    .assert_eq(&render(&library.problems));
}

/// The problems of `code` in `yaml`, as (line, column).
fn positions(yaml: &str, code: &str) -> Vec<(u32, u32)> {
    let library = load(
        &[("p.yaml".to_string(), unindent(yaml))],
        &Catalog::standard(),
    );
    library
        .problems
        .iter()
        .filter(|p| p.code == code)
        .map(|p| (p.line, p.col))
        .collect()
}

/// Bad expressions, templates, cells and timers are reported inside the text the analyst
/// wrote. Whether a given text is rejected is the expression and schedule parsers' business
/// (their own tests decide); here every rejection must land on the right line, within the
/// scalar's columns, and nothing else may be reported.
#[test]
fn bad_expressions_timers_and_cells_point_inside_their_text() {
    let yaml = r#"
        process: p
        steps:
          a:
            set: { x: "score > > 1", y: 'amount * (2' }
            then:
              - when: decision == == "approve"
                goto: b
              - otherwise: b
          b:
            task: "Approve {{ quote. }}"
            due: P2X
            goto: c
          c:
            wait: "0 0 31 4 *"
            goto: d
          d:
            rules: t
            result: r
        tables:
          t:
            inputs: [x]
            outputs: [y]
            rules:
              - when: ["> > 1"]
                then: [1]
        "#;
    // (code, line, first column of the text, last column of the text).
    let expected = [
        (codes::BAD_EXPRESSION, 4, 15, 27),
        (codes::BAD_EXPRESSION, 4, 33, 45),
        (codes::BAD_EXPRESSION, 6, 15, 38),
        (codes::BAD_TEMPLATE, 10, 11, 32),
        (codes::BAD_TIMER, 11, 10, 12),
        (codes::TIMER_NEVER_FIRES, 14, 11, 22),
        (codes::BAD_TEST, 24, 16, 22),
    ];
    let library = load(
        &[("p.yaml".to_string(), unindent(yaml))],
        &Catalog::standard(),
    );
    for problem in &library.problems {
        let fits = expected.iter().any(|&(code, line, first, last)| {
            problem.code == code && problem.line == line && (first..=last).contains(&problem.col)
        });
        assert!(fits, "unexpected problem: {problem}");
    }
}

/// A reference written in quotes is reported at its opening quote, like any other value.
#[test]
fn positions_of_references_in_quoted_scalars() {
    let yaml = r#"
        process: p
        steps:
          a:
            set: { x: 1 }
            goto: "nowhere"
        "#;
    assert_eq!(positions(yaml, codes::UNKNOWN_STEP), [(5, 11)]);
}

#[test]
fn operation_position_in_a_quoted_call() {
    let yaml = r#"
        process: p
        steps:
          a: { call: "einvoice.sned" }
        "#;
    assert_eq!(positions(yaml, codes::UNKNOWN_OPERATION), [(3, 24)]);
}

/// Many truncated and garbled versions of valid files: loading must never panic.
#[test]
fn garbled_files_never_panic() {
    let garbage = [
        "{", "}", "[", "]", ":", "- ", "'", "\"", "\t", "&a ", "*a", "!!", "|", ">", "{{", "\n  ",
        "#", "%", "\u{feff}", "é",
    ];
    let mut variants = 0;
    for (name, text) in EXAMPLES {
        let chars: Vec<(usize, char)> = text.char_indices().collect();
        for (i, (at, _)) in chars.iter().enumerate().step_by(3) {
            let truncated = &text[..*at];
            let mut garbled = text.to_string();
            garbled.insert_str(*at, garbage[i % garbage.len()]);
            let mut cut = text.to_string();
            let end = chars.get(i + 5).map_or(text.len(), |(e, _)| *e);
            cut.replace_range(*at..end, "");
            for variant in [truncated.to_string(), garbled, cut] {
                let _ = load(&[(name.to_string(), variant)], &Catalog::standard());
                variants += 1;
            }
        }
        // Every line with its indentation shifted, one at a time.
        let lines: Vec<&str> = text.lines().collect();
        for i in 0..lines.len() {
            let mut shifted = lines.clone();
            let moved = format!("   {}", lines[i]);
            shifted[i] = &moved;
            let _ = load(
                &[(name.to_string(), shifted.join("\n"))],
                &Catalog::standard(),
            );
            variants += 1;
        }
    }
    assert!(variants > 2000, "only {variants} variants");
}

#[test]
fn schema_lists_every_key_the_parser_accepts() {
    let schema = json_schema();
    let step = &schema["$defs"]["step"]["properties"];
    for key in keys::all_step_keys() {
        assert!(
            step.get(key.name).is_some(),
            "step key `{}` missing from the schema",
            key.name
        );
    }
    for kind in keys::KINDS {
        assert!(
            schema["$defs"]["step"]["oneOf"]
                .as_array()
                .unwrap()
                .iter()
                .any(|o| o["required"][0] == kind.key.name),
            "kind `{}` missing from the step's oneOf",
            kind.key.name
        );
    }
    let process = &schema["anyOf"][0]["properties"];
    for key in keys::PROCESS {
        assert!(
            process.get(key.name).is_some(),
            "process key `{}` missing",
            key.name
        );
    }
    // Nested maps: every key of every table the parser checks appears somewhere in the schema.
    let text = schema.to_string();
    let tables: &[&[keys::Key]] = &[
        keys::START,
        keys::TABLE,
        keys::RULE,
        keys::COMMON,
        keys::USER_TASK,
        keys::REMINDERS,
        keys::ESCALATE,
        keys::RETRY,
        keys::BRANCH,
        keys::BOUNDARY,
        keys::WAIT,
        keys::RACE,
        keys::SUBPROCESS,
        keys::EACH,
        keys::END,
        keys::FIELD,
    ];
    for table in tables {
        for key in *table {
            assert!(
                text.contains(&format!("\"{}\":{{", key.name)),
                "key `{}` missing",
                key.name
            );
        }
    }
    assert_eq!(
        schema["$schema"],
        "https://json-schema.org/draft/2020-12/schema"
    );
    assert_eq!(
        schema["$defs"]["step"]["dependentRequired"]["send"][0],
        "to"
    );
}

#[test]
fn every_code_is_documented() {
    let doc = include_str!("../../../docs/errors.md");
    for (code, _) in codes::ALL {
        assert!(doc.contains(code), "{code} is not in docs/errors.md");
    }
    let mut seen = std::collections::BTreeSet::new();
    for (code, _) in codes::ALL {
        assert!(seen.insert(code), "{code} listed twice");
    }
}

#[test]
fn a_process_without_steps() {
    check(
        r#"
        process: p
        steps: {}
        "#,
        expect![[r#"
            p.yaml:2:1: CICLO-E0104 the process has no steps
              hint: add at least one step under `steps:`
        "#]],
    );
}

#[test]
fn receive_task_hit_policies_and_start_on_a_timer() {
    let def = parse_ok(
        r#"
        process: p
        zone: Europe/Rome
        start: { goto: reply, timer: "2027-01-01T09:00" }
        tables:
          u: { hit: unique, inputs: [a], outputs: [x], rules: [{ when: [true], then: [1] }] }
          c: { hit: collect, inputs: [a], outputs: [x], rules: [{ when: ["[1..5]"], then: ['"low"'] }] }
        steps:
          reply:
            receive: quote-accepted
            key: quote.number
            label: Wait for the customer
            goto: rate
          rate: { rules: u, result: r, goto: rate-more }
          rate-more: { rules: c, result: r2 }
        "#,
    );
    let StartTrigger::Timer { schedule } = &def.starts[0].trigger else {
        panic!()
    };
    assert_eq!(schedule.source(), "2027-01-01T09:00");
    let reply = def.step_by_name("reply").unwrap();
    assert_eq!(reply.label.as_deref(), Some("Wait for the customer"));
    let StepKind::Receive { message } = &reply.kind else {
        panic!()
    };
    assert_eq!(
        (
            message.name.as_str(),
            message.key.as_ref().unwrap().source()
        ),
        ("quote-accepted", "quote.number")
    );
    assert_eq!(def.table("u").unwrap().hit, HitPolicy::Unique);
    assert_eq!(def.table("u").unwrap().rules[0].when[0].source(), "true");
    assert_eq!(def.table("c").unwrap().hit, HitPolicy::Collect);
    let StepKind::Rules { table, result } = &def.step_by_name("rate").unwrap().kind else {
        panic!()
    };
    assert_eq!((table.as_str(), result.as_str()), ("u", "r"));
    // Ids follow file order and the index maps every name.
    assert_eq!(def.index.len(), 3);
    assert_eq!(def.index["rate-more"], 2);
}

#[test]
fn json_schema_is_valid_json_with_descriptions() {
    let schema = json_schema();
    let task = &schema["$defs"]["step"]["properties"]["task"];
    assert!(task["description"].as_str().unwrap().contains("User task"));
    let start = &schema["anyOf"][0]["properties"]["start"]["anyOf"];
    assert_eq!(start.as_array().unwrap().len(), 3);
}

#[test]
fn user_task_show() {
    let library = load(
        &[(
            "p.yaml".to_string(),
            unindent(
                r#"
                process: p
                steps:
                  a:
                    task: Decide
                    show:
                      - { label: Customer, value: quote.customer.name }
                      - { label: Total, value: quote.total, format: money }
                      - label: Lines
                        table: quote.lines
                        columns: { Product: name, List price: list_price }
                "#,
            ),
        )],
        &Catalog::standard(),
    );
    assert_eq!(render(&library.problems), "");
    let def = &library.definitions[0];
    let StepKind::User(task) = &def.step(def.index["a"]).kind else {
        panic!("not a user task")
    };
    let shown: Vec<String> = task
        .show
        .iter()
        .map(|item| match &item.content {
            ShowContent::Value(e) => format!("{}={} {:?}", item.label, e.source(), item.format),
            ShowContent::Table { rows, columns } => format!(
                "{}={} [{}]",
                item.label,
                rows.source(),
                columns
                    .iter()
                    .map(|(h, e)| format!("{h}:{}", e.source()))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        })
        .collect();
    assert_eq!(
        shown,
        [
            "Customer=quote.customer.name None",
            "Total=quote.total Some(Money)",
            "Lines=quote.lines [Product:name, List price:list_price]",
        ]
    );
}

#[test]
fn user_task_show_problems() {
    check(
        r#"
        process: p
        steps:
          a:
            task: Decide
            show:
              - { label: Total, value: quote.total +, format: euro }
              - { label: Lines, table: quote.lines }
              - { value: x }
              - { label: Both, value: x, table: y, columns: { A: a } }
              - { label: Bad column, table: y, columns: { A: "a +" } }
        "#,
        expect![[r#"
            p.yaml:6:45: CICLO-E0120 bad expression `quote.total +`: unexpected end of expression
            p.yaml:6:55: CICLO-E0107 unknown format `euro`
              hint: use money, percent or date
            p.yaml:7:32: CICLO-E0104 `table` needs `columns`
              hint: write `columns: { Product: name, Qty: qty }`
            p.yaml:8:9: CICLO-E0104 this entry of `show` needs `label`
              hint: what the value is called on the page
            p.yaml:9:31: CICLO-E0107 an entry of `show` has a `value`, or a `table` with `columns`, not both
            p.yaml:10:58: CICLO-E0120 bad expression `a +`: unexpected end of expression
        "#]],
    );
}

#[test]
fn email_links_desugar_to_a_timer_and_a_generated_step() {
    let def = parse_ok(
        r#"
        process: p
        steps:
          approve:
            task: Approve
            email: { to: quote.approver_email, name: quote.approver_name, template: approval-request }
            form: { comment: text, decision: [approve, reject] }
            goto: done
          done:
            end: true
        "#,
    );
    let approve = def.step_by_name("approve").unwrap();
    let StepKind::User(task) = &approve.kind else {
        panic!("a user task")
    };
    let email = task.email.as_ref().unwrap();
    assert_eq!(email.field, "decision", "the first choice field");
    assert_eq!(email.template, "approval-request");
    assert_eq!(approve.boundary.len(), 1);
    let boundary = &approve.boundary[0];
    assert!(!boundary.interrupting);
    let BoundaryEvent::Timer(timer) = &boundary.event else {
        panic!("a timer")
    };
    assert_eq!(timer.source(), "PT0S");
    assert_eq!(boundary.target.id, email.step);
    let generated = def.step(email.step);
    assert_eq!(generated.name, "approve.email");
    assert_eq!(generated.parent, None);
    assert!(matches!(generated.next, Next::End));
    let StepKind::Service {
        connector,
        operation,
        input,
        ..
    } = &generated.kind
    else {
        panic!("a service step")
    };
    assert_eq!((connector.as_str(), operation.as_str()), ("links", "send"));
    let targets: Vec<&str> = input.iter().map(|a| a.target.as_str()).collect();
    assert_eq!(targets, ["to", "name", "step"]);
    assert_eq!(
        def.starts[0].target.name, "approve",
        "the generated step is never the start"
    );
}

#[test]
fn email_links_problems() {
    check(
        r#"
        process: p
        steps:
          a:
            task: Approve
            email: { to: x, template: t, field: comment, subject: no }
            form: { comment: text, decision: [approve, reject] }
            goto: b
          b:
            task: Approve
            email: { template: t }
            form: { ok: boolean }
            goto: c
          c:
            task: Approve
            email: { to: x, template: t, field: nope }
            form: { decision: [approve, reject] }
            goto: d
          d:
            task: Approve
            email: yes
        "#,
        expect![[r#"
            p.yaml:5:41: CICLO-E0107 form field `comment` is not a choice
              hint: links decide a choice field: `decision: [approve, reject]`
            p.yaml:5:50: CICLO-E0103 unknown key `subject` in `email`
              hint: allowed here: `to`, `template`, `name`, `field`
            p.yaml:10:5: CICLO-E0107 `email` sends one link per option of a choice field, and the form has none
              hint: add a field such as `decision: [approve, reject]` to `form`
            p.yaml:10:12: CICLO-E0104 `email` needs `to`
              hint: the approver's e-mail address, an expression
            p.yaml:15:41: CICLO-E0107 the form has no field `nope`
            p.yaml:20:12: CICLO-E0105 `email` should be a map such as `{ to: quote.approver_email, template: approval-request }`, found a text
        "#]],
    );
}

#[test]
fn computed_timers_are_checked_when_the_file_is_read() {
    check(
        r#"
        process: p
        start: a
        steps:
          a:
            wait: "{{ quote.valid_until + }}"
            goto: b
          b:
            task: Approve
            due: "{{ due }}"
            reminders: { every: "{{ often }}", goto: c }
            escalate: { after: "{{ deadline", goto: c }
            on:
              - timer: "{{ patience }}"
                zone: Europe/Rmoe
                goto: c
          c:
            race:
              - timer: "{{ add_days(quote.valid_until, 1) }}"
                goto: d
          d: { end: true }
        "#,
        expect![[r#"
            p.yaml:5:35: CICLO-E0121 bad template `{{ quote.valid_until + }}`: unexpected end of expression
            p.yaml:9:10: CICLO-E0125 the timer `{{ due }}` cannot be computed here
              hint: a computed timer (`{{ }}`) fires once: write it in `wait`, a race's `timer`, an `on: - timer:` or `escalate: after`; `due`, `every` and `reminders` take a duration or cron
            p.yaml:10:25: CICLO-E0125 the timer `{{ often }}` cannot be computed here
              hint: a computed timer (`{{ }}`) fires once: write it in `wait`, a race's `timer`, an `on: - timer:` or `escalate: after`; `due`, `every` and `reminders` take a duration or cron
            p.yaml:11:25: CICLO-E0121 bad template `{{ deadline`: `{{` is not closed by `}}`
            p.yaml:14:15: CICLO-E0127 unknown time zone `Europe/Rmoe`
              hint: did you mean `Europe/Rome`?
        "#]],
    );
    // A template that reads no variable is computed at once: a value that is no timer, or an
    // expression that fails, is a problem of the file. A past date is fine: it fires at once.
    check(
        r#"
        process: p
        start: a
        steps:
          a:
            race:
              - timer: "{{ 42 }}"
                goto: b
              - timer: "{{ 'next week' }}"
                goto: b
              - timer: "{{ '2027-02-30' }}"
                goto: b
              - timer: "{{ date('2027-02-30') }}"
                goto: b
              - timer: "{{ 'R/P1D' }}"
                goto: b
              - timer: "{{ duration('P30D') }}"
                goto: b
              - timer: "{{ '2020-01-01' }}T09:00"
                goto: b
              - timer: "{{ now() + duration('PT1H') }}"
                goto: b
          b: { end: true }
        "#,
        expect![[r#"
            p.yaml:6:16: CICLO-E0125 the timer `{{ 42 }}` gave a number (42); expected a date, an instant or a duration, or a text of one (2027-02-03, 2027-02-03T09:00, 2027-02-03T09:00:00Z, P30D)
              hint: a computed timer is a date, an instant or a duration, such as "{{ add_days(quote.valid_until, 1) }}" or "{{ duration('P30D') }}"
            p.yaml:8:16: CICLO-E0125 the timer `{{ 'next week' }}` gave the text "next week"; expected a date, an instant or a duration, or a text of one (2027-02-03, 2027-02-03T09:00, 2027-02-03T09:00:00Z, P30D)
              hint: a computed timer is a date, an instant or a duration, such as "{{ add_days(quote.valid_until, 1) }}" or "{{ duration('P30D') }}"
            p.yaml:10:16: CICLO-E0125 the timer `{{ '2027-02-30' }}` gave the text "2027-02-30": February 2027 has no day 30
              hint: a computed timer is a date, an instant or a duration, such as "{{ add_days(quote.valid_until, 1) }}" or "{{ duration('P30D') }}"
            p.yaml:12:16: CICLO-E0125 the timer `{{ date('2027-02-30') }}` cannot be computed: date: "2027-02-30" is not a date (write YYYY-MM-DD) at column 9
              hint: a computed timer is a date, an instant or a duration, such as "{{ add_days(quote.valid_until, 1) }}" or "{{ duration('P30D') }}"
            p.yaml:14:16: CICLO-E0125 the timer `{{ 'R/P1D' }}` gave the text "R/P1D"; expected a date, an instant or a duration, or a text of one (2027-02-03, 2027-02-03T09:00, 2027-02-03T09:00:00Z, P30D)
              hint: a computed timer is a date, an instant or a duration, such as "{{ add_days(quote.valid_until, 1) }}" or "{{ duration('P30D') }}"
        "#]],
    );
    let def = parse_ok(
        r#"
        process: p
        zone: Europe/Rome
        steps:
          a:
            wait: "{{ quote.valid_until }}"
        "#,
    );
    let StepKind::Wait {
        event:
            CatchEvent::Timer(TimerSpec::Computed {
                template,
                zone_name,
                ..
            }),
    } = &def.step_by_name("a").unwrap().kind
    else {
        panic!("a computed timer")
    };
    assert_eq!(template.source(), "{{ quote.valid_until }}");
    assert_eq!(zone_name, "Europe/Rome");
}
