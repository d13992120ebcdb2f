//! Decision tables (business-rule tasks): evaluate the input columns, test each rule's cells,
//! and combine the matching rules' outputs according to the hit policy.
//!
//! Errors carry the offset inside the cell or expression that failed, and their message names
//! the table, the rule (numbered from 1, as analysts count rows) and the column.

use std::collections::BTreeMap;

use rust_decimal::Decimal;

use crate::expr::{Context, ExprError, Scope};
use crate::model::{DecisionTable, HitPolicy, Rule};
use crate::value::Value;

/// Evaluates `table` against `scope`.
///
/// One output gives the bare value, several give a map of output name to value. `First` and
/// `Unique` give that (or null when no rule matches), `Collect` a list of them, `CollectSum`
/// the sum of the single output over the matching rules (0 when none match).
pub fn evaluate(
    table: &DecisionTable,
    scope: &dyn Scope,
    ctx: &Context,
) -> Result<Value, ExprError> {
    let in_table = |message: String, offset: usize| {
        ExprError::new(format!("table `{}`: {message}", table.name), offset)
    };
    if table.hit == HitPolicy::CollectSum && table.outputs.len() != 1 {
        return Err(in_table(
            format!(
                "hit policy collect sum needs exactly one output, this table has {}",
                table.outputs.len()
            ),
            0,
        ));
    }
    let mut inputs = Vec::with_capacity(table.inputs.len());
    for (column, input) in table.inputs.iter().enumerate() {
        let value = input.eval(scope, ctx).map_err(|err| {
            in_table(
                format!(
                    "input {} (`{}`): {}",
                    column + 1,
                    input.source(),
                    err.message
                ),
                err.offset,
            )
        })?;
        inputs.push(value);
    }

    let mut matched: Vec<(usize, &Rule)> = Vec::new();
    for (index, rule) in table.rules.iter().enumerate() {
        let number = index + 1;
        if rule.when.len() != inputs.len() {
            return Err(in_table(
                format!(
                    "rule {number} has {} tests for {} inputs",
                    rule.when.len(),
                    inputs.len()
                ),
                0,
            ));
        }
        if rule_matches(table, number, rule, &inputs, scope, ctx)? {
            matched.push((number, rule));
            // `First` needs no more rules; `Unique` needs to know whether a second one matches.
            if table.hit == HitPolicy::First {
                break;
            }
        }
    }

    match table.hit {
        HitPolicy::First => match matched.first() {
            Some(&(number, rule)) => outputs(table, number, rule, scope, ctx),
            None => Ok(Value::Null),
        },
        HitPolicy::Unique => match matched.as_slice() {
            [] => Ok(Value::Null),
            [(number, rule)] => outputs(table, *number, rule, scope, ctx),
            several => {
                let numbers: Vec<String> = several.iter().map(|(n, _)| n.to_string()).collect();
                Err(in_table(
                    format!(
                        "rules {} all match, but hit policy unique allows only one",
                        join_numbers(&numbers)
                    ),
                    0,
                ))
            }
        },
        HitPolicy::Collect => matched
            .iter()
            .map(|&(number, rule)| outputs(table, number, rule, scope, ctx))
            .collect::<Result<Vec<_>, _>>()
            .map(Value::List),
        HitPolicy::CollectSum => {
            let mut total = Decimal::ZERO;
            for &(number, rule) in &matched {
                match outputs(table, number, rule, scope, ctx)? {
                    Value::Number(n) => {
                        total = total.checked_add(n).ok_or_else(|| {
                            in_table("the sum is too large for a number".into(), 0)
                        })?;
                    }
                    other => {
                        return Err(in_table(
                            format!(
                                "rule {number}: output `{}` is {}, but collect sum adds numbers",
                                table.outputs[0],
                                other.type_name()
                            ),
                            0,
                        ));
                    }
                }
            }
            Ok(Value::Number(total))
        }
    }
}

fn rule_matches(
    table: &DecisionTable,
    number: usize,
    rule: &Rule,
    inputs: &[Value],
    scope: &dyn Scope,
    ctx: &Context,
) -> Result<bool, ExprError> {
    for (column, (test, input)) in rule.when.iter().zip(inputs).enumerate() {
        let passed = test.matches(input, scope, ctx).map_err(|err| {
            ExprError::new(
                format!(
                    "table `{}`, rule {number}, input {} (`{}`): {}",
                    table.name,
                    column + 1,
                    table.inputs[column].source(),
                    err.message
                ),
                err.offset,
            )
        })?;
        if !passed {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The outputs of one rule: the bare value for one output, a map for several.
fn outputs(
    table: &DecisionTable,
    number: usize,
    rule: &Rule,
    scope: &dyn Scope,
    ctx: &Context,
) -> Result<Value, ExprError> {
    if rule.then.len() != table.outputs.len() {
        return Err(ExprError::new(
            format!(
                "table `{}`: rule {number} has {} outputs, the table declares {}",
                table.name,
                rule.then.len(),
                table.outputs.len()
            ),
            0,
        ));
    }
    let mut values = BTreeMap::new();
    for (name, expr) in table.outputs.iter().zip(&rule.then) {
        let value = expr.eval(scope, ctx).map_err(|err| {
            ExprError::new(
                format!(
                    "table `{}`, rule {number}, output `{name}`: {}",
                    table.name, err.message
                ),
                err.offset,
            )
        })?;
        if table.outputs.len() == 1 {
            return Ok(value);
        }
        values.insert(name.clone(), value);
    }
    Ok(Value::Map(values))
}

/// "2, 3 and 5".
fn join_numbers(numbers: &[String]) -> String {
    match numbers.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} and {last}", rest.join(", ")),
        _ => numbers.join(""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::expr::{Expr, UnaryTest};
    use crate::model::Span;
    use crate::value::Vars;

    fn ctx() -> Context {
        Context::utc("2025-03-31T09:00:00Z".parse().unwrap())
    }

    /// Builds a table from cell texts, as the YAML reader would.
    fn table(
        hit: HitPolicy,
        inputs: &[&str],
        outputs: &[&str],
        rules: &[(&[&str], &[&str])],
    ) -> DecisionTable {
        DecisionTable {
            name: "discount".into(),
            hit,
            inputs: inputs.iter().map(|s| Expr::parse(s).unwrap()).collect(),
            outputs: outputs.iter().map(|s| s.to_string()).collect(),
            rules: rules
                .iter()
                .map(|(when, then)| Rule {
                    when: when.iter().map(|s| UnaryTest::parse(s).unwrap()).collect(),
                    then: then.iter().map(|s| Expr::parse(s).unwrap()).collect(),
                    span: Span::default(),
                })
                .collect(),
            span: Span::default(),
        }
    }

    fn scope(tier: &str, amount: i64) -> Vars {
        let mut vars = Vars::new();
        vars.insert("tier".into(), Value::from(tier));
        vars.insert("amount".into(), Value::from(amount));
        vars
    }

    fn num(n: &str) -> Value {
        Value::Number(n.parse().unwrap())
    }

    fn discounts(hit: HitPolicy) -> DecisionTable {
        table(
            hit,
            &["tier", "amount"],
            &["rate"],
            &[
                (&["\"gold\"", ">= 1000"], &["0.10"]),
                (&["\"gold\", \"silver\"", "[100..1000)"], &["0.05"]),
                (&["-", "< 100"], &["0"]),
                (&["not(\"bronze\")", "-"], &["0.01"]),
            ],
        )
    }

    #[test]
    fn first_gives_the_first_matching_rule() {
        let t = discounts(HitPolicy::First);
        assert_eq!(
            evaluate(&t, &scope("gold", 1500), &ctx()).unwrap(),
            num("0.10")
        );
        assert_eq!(
            evaluate(&t, &scope("silver", 100), &ctx()).unwrap(),
            num("0.05")
        );
        assert_eq!(
            evaluate(&t, &scope("silver", 1000), &ctx()).unwrap(),
            num("0.01")
        );
        assert_eq!(
            evaluate(&t, &scope("bronze", 5000), &ctx()).unwrap(),
            Value::Null
        );
    }

    #[test]
    fn unique_refuses_two_matches_and_names_them() {
        let t = discounts(HitPolicy::Unique);
        let err = evaluate(&t, &scope("gold", 1500), &ctx()).unwrap_err();
        assert!(err.message.contains("rules 1 and 4"), "{err}");
        assert_eq!(
            evaluate(&t, &scope("bronze", 50), &ctx()).unwrap(),
            num("0")
        );
        assert_eq!(
            evaluate(&t, &scope("bronze", 500), &ctx()).unwrap(),
            Value::Null
        );
    }

    #[test]
    fn collect_lists_and_collect_sum_adds() {
        let t = discounts(HitPolicy::Collect);
        assert_eq!(
            evaluate(&t, &scope("gold", 1500), &ctx()).unwrap(),
            Value::List(vec![num("0.10"), num("0.01")])
        );
        let t = discounts(HitPolicy::CollectSum);
        assert_eq!(
            evaluate(&t, &scope("gold", 1500), &ctx()).unwrap(),
            num("0.11")
        );
        assert_eq!(
            evaluate(&t, &scope("bronze", 500), &ctx()).unwrap(),
            num("0")
        );
    }

    #[test]
    fn several_outputs_make_a_map() {
        let t = table(
            HitPolicy::First,
            &["amount"],
            &["approver", "limit"],
            &[
                (&["> 1000"], &["\"director\"", "amount * 2"]),
                (&["-"], &["\"manager\"", "1000"]),
            ],
        );
        let Value::Map(out) = evaluate(&t, &scope("gold", 5000), &ctx()).unwrap() else {
            panic!("map expected")
        };
        assert_eq!(out["approver"], Value::from("director"));
        assert_eq!(out["limit"], num("10000"));
    }

    #[test]
    fn errors_name_the_rule_and_column() {
        let t = table(
            HitPolicy::First,
            &["tier"],
            &["rate"],
            &[(&["> 10"], &["1"])],
        );
        let err = evaluate(&t, &scope("gold", 1), &ctx()).unwrap_err();
        assert!(err.message.contains("rule 1, input 1 (`tier`)"), "{err}");
        let t = table(HitPolicy::First, &["tiers"], &["rate"], &[(&["-"], &["1"])]);
        let err = evaluate(&t, &scope("gold", 1), &ctx()).unwrap_err();
        assert!(err.message.contains("unknown variable `tiers`"), "{err}");
        let t = table(
            HitPolicy::CollectSum,
            &["tier"],
            &["rate"],
            &[(&["-"], &["'x'"])],
        );
        let err = evaluate(&t, &scope("gold", 1), &ctx()).unwrap_err();
        assert!(err.message.contains("collect sum adds numbers"), "{err}");
    }
}
