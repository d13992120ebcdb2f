//! Tests of the diagrams: every example renders to well-formed SVG with an id per step, the
//! layout goes left to right without overlapping shapes, text is escaped, highlights land on
//! the right steps, and the output is the same bytes every time.

use expect_test::expect;

use super::*;
use crate::parse::{Catalog, codes, load, load_one};

fn parse(yaml: &str) -> Definition {
    let text = unindent(yaml);
    load_one("t.yaml", &text, &Catalog::standard()).unwrap_or_else(|problems| {
        let list: Vec<String> = problems.iter().map(ToString::to_string).collect();
        panic!("test process does not load:\n{}", list.join("\n"))
    })
}

/// Test YAML is written indented inside Rust strings; take the common indentation off.
fn unindent(text: &str) -> String {
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
}

/// The process files of processes/examples/, of processes/ itself (the lead-to-cash library,
/// with its data files) and of the parser's showcase fixtures, read at test time so a new
/// process is covered without touching this file. Each folder is one library, as the CLI
/// loads a folder; table-only and data files are skipped; a process that uses tables or data
/// from another file is loaded together with its folder's files.
fn examples() -> Vec<Definition> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let read = |dir: &std::path::Path, prefix: &str| -> Vec<(String, String)> {
        std::fs::read_dir(dir)
            .expect("the examples' folder exists")
            .map(|entry| entry.expect("readable directory").path())
            .filter(|path| path.extension().is_some_and(|e| e == "yaml" || e == "yml"))
            .map(|path| {
                // Data files keep their `data/` folder in the name: that makes them data.
                let name = format!(
                    "{prefix}{}",
                    path.file_name().unwrap_or_default().to_string_lossy()
                );
                let text = std::fs::read_to_string(&path).expect("readable example");
                (name, text)
            })
            .collect()
    };
    let library_files = {
        let mut files = read(&root.join("../processes"), "");
        files.extend(read(&root.join("../processes/data"), "data/"));
        files
    };
    let mut definitions = Vec::new();
    for mut files in [
        read(&root.join("../processes/examples"), ""),
        library_files,
        read(&root.join("src/parse/fixtures"), ""),
    ] {
        files.sort();
        for (name, text) in &files {
            if crate::parse::data_name(name).is_some() {
                continue;
            }
            match load_one(name, text, &Catalog::standard()) {
                Ok(definition) => definitions.push(definition),
                Err(problems) if problems.iter().all(|p| p.code == codes::NOT_A_PROCESS_FILE) => {}
                Err(_) => {
                    let library = load(&files, &Catalog::standard());
                    let definition = library
                        .definitions
                        .into_iter()
                        .find(|d| d.file == *name)
                        .unwrap_or_else(|| panic!("{name} does not load with its folder"));
                    definitions.push(definition);
                }
            }
        }
    }
    assert!(definitions.len() >= 4, "the examples were not found");
    definitions
}

/// A small XML well-formedness check: one root, nested and matching tags, quoted attributes
/// without duplicates or `<`, and only the predefined or numeric entity references.
fn well_formed(xml: &str) -> Result<(), String> {
    fn entity(chars: &[char], i: usize) -> Result<usize, String> {
        let end = (i..chars.len().min(i + 12))
            .find(|&j| chars[j] == ';')
            .ok_or_else(|| format!("bare & at {i}"))?;
        let name: String = chars[i + 1..end].iter().collect();
        let numeric = name
            .strip_prefix("#x")
            .map(|h| !h.is_empty() && h.chars().all(|c| c.is_ascii_hexdigit()))
            .or_else(|| {
                name.strip_prefix('#')
                    .map(|d| !d.is_empty() && d.chars().all(|c| c.is_ascii_digit()))
            })
            .unwrap_or(false);
        if numeric || ["lt", "gt", "amp", "quot", "apos"].contains(&name.as_str()) {
            Ok(end + 1)
        } else {
            Err(format!("unknown entity &{name}; at {i}"))
        }
    }
    let name_char = |c: char| c.is_alphanumeric() || matches!(c, '-' | '_' | ':' | '.');
    let chars: Vec<char> = xml.chars().collect();
    let mut stack: Vec<String> = Vec::new();
    let mut root_done = false;
    let mut i = 0;
    let starts = |i: usize, s: &str| chars[i..].iter().take(s.len()).copied().eq(s.chars());
    while i < chars.len() {
        let c = chars[i];
        if c == '<' {
            if starts(i, "<!--") || starts(i, "<?") {
                let close = if starts(i, "<!--") { "-->" } else { "?>" };
                let end = (i + 2..chars.len())
                    .find(|&j| starts(j, close))
                    .ok_or("unclosed comment or declaration")?;
                i = end + close.len();
                continue;
            }
            let closing = chars.get(i + 1) == Some(&'/');
            let mut j = i + if closing { 2 } else { 1 };
            let name_start = j;
            while j < chars.len() && name_char(chars[j]) {
                j += 1;
            }
            let name: String = chars[name_start..j].iter().collect();
            if name.is_empty() {
                return Err(format!("bad tag name at {i}"));
            }
            if closing {
                while j < chars.len() && chars[j].is_whitespace() {
                    j += 1;
                }
                if chars.get(j) != Some(&'>') {
                    return Err(format!("bad closing tag at {i}"));
                }
                match stack.pop() {
                    Some(open) if open == name => {}
                    other => return Err(format!("</{name}> closes {other:?} at {i}")),
                }
                if stack.is_empty() {
                    root_done = true;
                }
                i = j + 1;
                continue;
            }
            if root_done {
                return Err(format!("second root element at {i}"));
            }
            let mut seen: Vec<String> = Vec::new();
            loop {
                let before = j;
                while j < chars.len() && chars[j].is_whitespace() {
                    j += 1;
                }
                match chars.get(j) {
                    None => return Err("unclosed tag".into()),
                    Some('>') => {
                        stack.push(name);
                        j += 1;
                        break;
                    }
                    Some('/') if chars.get(j + 1) == Some(&'>') => {
                        if stack.is_empty() {
                            root_done = true;
                        }
                        j += 2;
                        break;
                    }
                    _ => {}
                }
                if j == before {
                    return Err(format!("no space before attribute at {j}"));
                }
                let attr_start = j;
                while j < chars.len() && name_char(chars[j]) {
                    j += 1;
                }
                let attr: String = chars[attr_start..j].iter().collect();
                if attr.is_empty() || chars.get(j) != Some(&'=') {
                    return Err(format!("bad attribute at {attr_start}"));
                }
                if seen.contains(&attr) {
                    return Err(format!("duplicate attribute {attr} at {attr_start}"));
                }
                seen.push(attr);
                let quote = *chars.get(j + 1).ok_or("unclosed tag")?;
                if quote != '"' && quote != '\'' {
                    return Err(format!("unquoted attribute at {j}"));
                }
                j += 2;
                while j < chars.len() && chars[j] != quote {
                    match chars[j] {
                        '<' => return Err(format!("< in attribute at {j}")),
                        '&' => j = entity(&chars, j)?,
                        _ => j += 1,
                    }
                }
                if j >= chars.len() {
                    return Err("unclosed attribute".into());
                }
                j += 1;
            }
            i = j;
        } else if c == '&' {
            i = entity(&chars, i)?;
        } else {
            if stack.is_empty() && !c.is_whitespace() {
                return Err(format!("text outside the root at {i}"));
            }
            i += 1;
        }
    }
    match (stack.is_empty(), root_done) {
        (true, true) => Ok(()),
        (false, _) => Err(format!("unclosed elements {stack:?}")),
        _ => Err("no root element".into()),
    }
}

/// The text of the group with this id, from `<g id=` to its `</g>` (groups do not nest).
fn group<'s>(svg: &'s str, id: &str) -> &'s str {
    let open = format!("<g id=\"{id}\"");
    let start = svg
        .find(&open)
        .unwrap_or_else(|| panic!("no group {id} in\n{svg}"));
    let end = svg[start..]
        .find("</g>")
        .map_or(svg.len(), |e| start + e + 4);
    &svg[start..end]
}

/// For each group, its id, classes and the element names inside: the shapes a reader sees,
/// without coordinates.
fn outline(svg: &str) -> String {
    let mut out = String::new();
    let mut rest = svg;
    while let Some(start) = rest.find("<g id=\"") {
        let body = &rest[start..];
        let end = body.find("</g>").unwrap_or(body.len());
        let inner = &body[..end];
        let id = inner[7..].split('"').next().unwrap_or("");
        let class = inner
            .split("class=\"")
            .nth(1)
            .and_then(|c| c.split('"').next())
            .unwrap_or("");
        let mut tags: Vec<&str> = Vec::new();
        for piece in inner.split('<').skip(2) {
            let tag = piece
                .split(|c: char| c.is_whitespace() || c == '>' || c == '/')
                .next()
                .unwrap_or("");
            if !tag.is_empty() && tags.last() != Some(&tag) {
                tags.push(tag);
            }
        }
        let _ = writeln!(out, "{id} [{class}]: {}", tags.join(" "));
        rest = &body[end..];
    }
    out
}

#[test]
fn the_checker_rejects_what_is_not_xml() {
    assert!(well_formed("<svg><g></g></svg>").is_ok());
    assert!(well_formed("<svg a=\"1\" b='&amp;'/>").is_ok());
    for bad in [
        "<svg><g></svg>",
        "<svg>a < b</svg>",
        "<svg>Tom & Jerry</svg>",
        "<svg a=1></svg>",
        "<svg a=\"1\" a=\"2\"></svg>",
        "<svg></svg><svg></svg>",
        "<svg><script>x</script>",
        "",
    ] {
        assert!(well_formed(bad).is_err(), "accepted {bad:?}");
    }
}

#[test]
fn every_example_renders_with_an_id_and_title_per_step() {
    let out_dir = std::env::var_os("CICLO_DIAGRAM_DIR");
    for def in examples() {
        let drawing = svg(&def, None);
        if let Err(e) = well_formed(&drawing) {
            panic!("{}: not well-formed: {e}", def.file);
        }
        assert!(drawing.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 "));
        assert!(
            !drawing.contains("href"),
            "{}: external reference",
            def.file
        );
        for step in &def.steps {
            let g = group(&drawing, &format!("step-{}", step.name));
            assert!(
                g.contains("<title>"),
                "{}: step {} has no title",
                def.file,
                step.name
            );
        }
        assert_eq!(drawing, svg(&def, None), "{}: not deterministic", def.file);
        let graph = dot(&def);
        assert!(graph.starts_with(&format!("digraph \"{}\" {{", def.id)));
        for step in &def.steps {
            assert!(
                graph.contains(&format!("\"step-{}\" [", step.name)),
                "{}: {} not in DOT",
                def.file,
                step.name
            );
        }
        if let Some(dir) = &out_dir {
            let path = std::path::Path::new(dir).join(format!("{}.svg", def.id));
            std::fs::write(&path, &drawing).expect("writable CICLO_DIAGRAM_DIR");
            std::fs::write(path.with_extension("dot"), &graph).expect("writable CICLO_DIAGRAM_DIR");
        }
    }
}

#[test]
fn flows_run_left_to_right_and_shapes_do_not_overlap() {
    for def in examples() {
        let mut graph = Graph::build(&def);
        graph.layout();
        for edge in graph.edges.iter().filter(|e| !e.back) {
            let (a, b) = (&graph.nodes[edge.from], &graph.nodes[edge.to]);
            assert!(
                a.x < b.x,
                "{}: {} -> {} goes right to left",
                def.file,
                a.id,
                b.id
            );
            let first = edge.points.first().copied().unwrap_or_default();
            let last = edge.points.last().copied().unwrap_or_default();
            assert!(
                (last.0 - b.left()).abs() < 0.5 && (last.1 - b.y).abs() < 0.5,
                "{}: flow to {} ends off it",
                def.file,
                b.id
            );
            assert!(
                first.0 >= a.left() - 0.5,
                "{}: flow from {} starts left of it",
                def.file,
                a.id
            );
            // Orthogonal: every segment is horizontal or vertical.
            for pair in edge.points.windows(2) {
                let (p, q) = (pair[0], pair[1]);
                assert!(
                    (p.0 - q.0).abs() < 0.01 || (p.1 - q.1).abs() < 0.01,
                    "{}: slanted flow {} -> {}: {:?} (from y {}, to y {})",
                    def.file,
                    a.id,
                    b.id,
                    edge.points,
                    a.y,
                    b.y
                );
            }
        }
        let shapes: Vec<&Node> = graph
            .nodes
            .iter()
            .filter(|n| n.shape != Shape::Dummy)
            .collect();
        for (i, a) in shapes.iter().enumerate() {
            for b in &shapes[i + 1..] {
                // A sub-process holds its own steps; every other pair must be apart.
                let nested =
                    |outer: &Node, inner: &Node| outer.step.is_some() && outer.step == inner.scope;
                if nested(a, b) || nested(b, a) || a.scope != b.scope {
                    continue;
                }
                let apart = a.right() <= b.left()
                    || b.right() <= a.left()
                    || a.bottom() <= b.top()
                    || b.bottom() <= a.top();
                assert!(apart, "{}: {} overlaps {}", def.file, a.id, b.id);
            }
        }
        for node in &graph.nodes {
            assert!(
                node.x.is_finite() && node.y.is_finite() && node.left() >= 0.0 && node.top() >= 0.0
            );
            assert!(
                node.right() <= graph.width && node.bottom() + node.below <= graph.height,
                "{}: {} outside the view box",
                def.file,
                node.id
            );
        }
    }
}

const TINY: &str = r#"
    process: tiny
    steps:
      review:
        task: Review order {{order.number}}
        form: { amount: number }
        goto: route
      route:
        decide:
          - when: amount > 100
            goto: big
          - otherwise: small
      big: { end: true }
      small: { end: true }
"#;

#[test]
fn a_tiny_process_uses_bpmn_shapes_and_labels_its_branches() {
    let def = parse(TINY);
    let drawing = svg(&def, None);
    well_formed(&drawing).expect("well-formed");
    expect![[r#"
        start-0 [event start]: title circle
        step-review [task user]: title rect circle path text
        step-route [gateway exclusive]: title polygon path text
        step-big [event end]: title circle text
        step-small [event end]: title circle text
    "#]]
    .assert_eq(
        &outline(&drawing)
            .lines()
            .filter(|l| !l.starts_with("flow-"))
            .map(|l| format!("{l}\n"))
            .collect::<String>(),
    );
    assert!(
        group(&drawing, "start-0").contains("stroke-width=\"1.5\""),
        "a start is a thin circle"
    );
    assert!(
        group(&drawing, "step-big").contains("stroke-width=\"3.5\""),
        "an end is a thick circle"
    );
    assert!(
        group(&drawing, "step-review").contains(" rx=\"10\""),
        "a task is rounded"
    );
    let review = group(&drawing, "step-review");
    assert!(
        review.contains("<title>review (user task): Review order {{order.number}}</title>"),
        "{review}"
    );
    assert!(
        review.contains(">review</text>") && review.contains(">Review order</text>"),
        "{review}"
    );
    assert!(
        drawing.contains(">amount &gt; 100</text>"),
        "the branch's condition labels its flow"
    );
    assert!(
        drawing.contains("font-style=\"italic\""),
        "otherwise is labelled"
    );
    assert!(drawing.contains(">otherwise</text>"));
    assert_eq!(
        drawing.matches("class=\"default-mark\"").count(),
        1,
        "one default flow slash"
    );
    assert_eq!(drawing.matches("marker-end=\"url(#arrow)\"").count(), 4);
    let view_box = drawing
        .split("viewBox=\"0 0 ")
        .nth(1)
        .and_then(|v| v.split('"').next())
        .unwrap_or("");
    let size: Vec<f64> = view_box.split(' ').filter_map(|v| v.parse().ok()).collect();
    assert!(
        size.len() == 2 && size[0] > size[1],
        "laid out left to right: {view_box}"
    );
}

#[test]
fn every_step_kind_gets_its_marker() {
    let def = parse(
        r#"
        process: kinds
        start:
          - goto: score
          - { goto: score, message: lead-in }
          - { goto: score, timer: "0 9 * * MON" }
        tables:
          t: { hit: first, inputs: [x], outputs: [y], rules: [ { when: ["-"], then: [1] } ] }
        steps:
          score: { set: { x: 1 }, goto: rate }
          rate: { rules: t, result: r, goto: fork }
          fork: { parallel: [mail, book] }
          mail: { send: hello, to: '"a@b.c"', goto: joined }
          book:
            call: erp.create-order
            each: { in: "[1, 2]", as: item, parallel: false }
            on:
              - timer: PT1H
                interrupt: false
                goto: chase
              - error: any
                goto: failed
            goto: joined
          joined: { join: all, goto: child }
          child: { process: other, goto: listen }
          listen: { receive: reply, key: x, goto: pick }
          pick:
            race:
              - message: yes
                key: x
                goto: pause
              - timer: P1D
                goto: stop
          pause: { wait: P1D, goto: maybe }
          maybe:
            branch:
              - when: x > 0
                goto: inner
              - otherwise: merged
          inner:
            subprocess:
              steps:
                a: { set: { y: 2 }, each: { in: "[1]", as: i }, goto: b }
                b: { set: { z: 3 } }
            goto: merged
          merged: { join: any }
          chase: { set: { chased: true } }
          failed: { end: { error: FAILED } }
          stop: { end: terminate }
        "#,
    );
    let drawing = svg(&def, None);
    well_formed(&drawing).expect("well-formed");
    expect![[r#"
        step-inner [subprocess]: title rect text
        start-0 [event start]: title circle
        start-1 [event start]: title circle rect path text
        start-2 [event start]: title circle path text
        step-score [task script]: title rect path text
        step-rate [task rules]: title rect path text
        step-fork [gateway parallel]: title polygon path text
        step-mail [task send]: title rect path text
        step-book [task service]: title rect polygon circle text path
        step-joined [gateway parallel join]: title polygon path text
        step-child [task call]: title rect polygon circle text rect path
        step-listen [task receive]: title rect path text
        step-pick [gateway event-based]: title polygon circle polygon text
        step-pause [event catch]: title circle path text
        step-maybe [gateway inclusive]: title polygon circle text
        step-a [task script]: title rect path text path
        step-b [task script]: title rect path text
        step-merged [gateway inclusive join]: title polygon circle text
        step-chase [task script]: title rect path text
        step-failed [event end error]: title circle polygon text
        step-stop [event end terminate]: title circle text
        race-pick-0 [event catch]: title circle rect path text
        race-pick-1 [event catch]: title circle path text
        start-inner [event start]: title circle
        end-b [event end implicit]: title circle
        end-merged [event end implicit]: title circle
        end-chase [event end implicit]: title circle
        boundary-book-0 [boundary non-interrupting]: title circle path
        boundary-book-1 [boundary]: title circle polygon
    "#]]
    .assert_eq(
        &outline(&drawing)
            .lines()
            .filter(|l| !l.starts_with("flow-"))
            .map(|l| format!("{l}\n"))
            .collect::<String>(),
    );
    if let Some(dir) = std::env::var_os("CICLO_DIAGRAM_DIR") {
        std::fs::write(std::path::Path::new(&dir).join("kinds.svg"), &drawing).expect("writable");
    }
    assert!(group(&drawing, "step-book").contains("multi-instance sequential"));
    assert!(group(&drawing, "step-a").contains("multi-instance parallel"));
    assert!(
        group(&drawing, "step-child").contains("stroke-width=\"3.5\""),
        "a call activity has a thick border"
    );
    assert!(
        group(&drawing, "boundary-book-0").contains("stroke-dasharray"),
        "non-interrupting is dashed"
    );
    assert!(!group(&drawing, "boundary-book-1").contains("stroke-dasharray"));

    // The sub-process is drawn expanded around its steps.
    let mut graph = Graph::build(&def);
    graph.layout();
    let node = |id: &str| {
        graph
            .nodes
            .iter()
            .find(|n| n.id == id)
            .unwrap_or_else(|| panic!("no {id}"))
    };
    let (outer, inner) = (node("step-inner"), node("step-a"));
    assert!(outer.left() < inner.left() && inner.right() < outer.right());
    assert!(outer.top() < inner.top() && inner.bottom() < outer.bottom());
    // Boundary events sit on the lower edge of their step.
    let book = node("step-book");
    for mark in &book.boundaries {
        assert!(
            (mark.y - book.bottom()).abs() < 0.01 && mark.x > book.left() && mark.x < book.right()
        );
    }
}

#[test]
fn labels_are_text_never_markup() {
    let def = parse(
        r#"
        process: escape
        steps:
          first:
            label: "<script>alert(1)</script> & Co"
            set: { x: 1 }
            then:
              - when: 'x > 0 and "a" != "<b>"'
                goto: last
              - otherwise: last
          last: { end: true, label: "it's \"done\"" }
        "#,
    );
    let drawing = svg(&def, None);
    well_formed(&drawing).expect("well-formed");
    assert!(!drawing.contains("<script"), "markup leaked:\n{drawing}");
    assert!(!drawing.contains("<b>"));
    let first = group(&drawing, "step-first");
    assert!(
        first.contains("<title>first: &lt;script&gt;alert(1)&lt;/script&gt; &amp; Co (script task): set x</title>"),
        "{first}"
    );
    assert!(
        first.contains(">&lt;script&gt;alert(1)&lt;</text>"),
        "{first}"
    );
    assert!(drawing.contains("&amp; Co"));
    assert!(drawing.contains("&quot;&lt;b&gt;&quot;"));
    assert!(drawing.contains("it&apos;s &quot;done&quot;"));
    let graph = dot(&def);
    assert!(
        graph.contains(r#"it's \"done\""#),
        "DOT strings are escaped:\n{graph}"
    );
}

#[test]
fn highlight_marks_current_and_done_steps() {
    let def = parse(TINY);
    let highlight = Highlight {
        current: vec!["route".into()],
        done: vec!["review".into(), "no-such-step".into()],
    };
    let drawing = svg(&def, Some(&highlight));
    well_formed(&drawing).expect("well-formed");
    assert!(
        group(&drawing, "step-route")
            .starts_with("<g id=\"step-route\" class=\"gateway exclusive current\">")
    );
    assert!(
        group(&drawing, "step-review")
            .starts_with("<g id=\"step-review\" class=\"task user done\">")
    );
    assert!(
        !group(&drawing, "step-big").contains("current")
            && !group(&drawing, "step-big").contains("done")
    );
    assert!(
        drawing.contains(".current .shape{stroke:"),
        "the style for current steps is there"
    );
    assert!(!svg(&def, None).contains("class=\"gateway exclusive current\""));
}

#[test]
fn loops_go_around_and_implicit_parts_are_drawn() {
    let def = parse(
        r#"
        process: loop
        steps:
          ask:
            task: Fill in
            form: { ok: boolean }
            then:
              - when: ok
                goto: book
              - otherwise: ask
          book: { set: { booked: true } }
        "#,
    );
    let mut graph = Graph::build(&def);
    graph.layout();
    let ids: Vec<&str> = graph
        .nodes
        .iter()
        .filter(|n| n.shape != Shape::Dummy)
        .map(|n| n.id.as_str())
        .collect();
    assert_eq!(
        ids,
        ["start-0", "step-ask", "step-book", "then-ask", "end-book"]
    );
    let back: Vec<&Edge> = graph.edges.iter().filter(|e| e.back).collect();
    assert_eq!(
        back.len(),
        1,
        "the otherwise flow back to ask closes the loop"
    );
    let ask = graph
        .nodes
        .iter()
        .find(|n| n.id == "step-ask")
        .map(|n| (n.top(), n.bottom()))
        .unwrap_or_default();
    let lane = back[0].points.iter().map(|p| p.1).fold(f64::NAN, f64::max);
    let lowest = back[0].points.iter().map(|p| p.1).fold(f64::NAN, f64::min);
    assert!(
        lowest < ask.0 || lane > ask.1,
        "the loop runs above or below the steps"
    );
}

#[test]
fn broken_definitions_draw_without_panicking() {
    let base = parse(TINY);
    let mut variants: Vec<Definition> = Vec::new();
    let mut dangling = base.clone();
    if let Next::Goto(target) = &mut dangling.steps[0].next {
        target.id = 999;
    }
    dangling.starts[0].target.id = 12345;
    variants.push(dangling);
    let mut self_loop = base.clone();
    if let Next::Goto(target) = &mut self_loop.steps[0].next {
        target.id = 0;
    }
    variants.push(self_loop);
    let mut parents = base.clone();
    parents.steps[0].parent = Some(0);
    parents.steps[1].parent = Some(2);
    parents.steps[2].parent = Some(1);
    parents.steps[3].parent = Some(77);
    variants.push(parents);
    let mut empty = base.clone();
    empty.steps.clear();
    empty.starts.clear();
    empty.id = "\u{1}<&>\"".into();
    variants.push(empty);
    let mut orphans = base.clone();
    orphans.starts.clear();
    variants.push(orphans);
    for def in &variants {
        let drawing = svg(def, Some(&Highlight::default()));
        well_formed(&drawing).unwrap_or_else(|e| panic!("{e}\n{drawing}"));
        assert!(!drawing.contains("NaN") && !drawing.contains("inf"));
        let _ = dot(def);
    }
}

#[test]
fn the_same_definition_gives_the_same_bytes() {
    let def = parse(TINY);
    let again = parse(TINY);
    assert_eq!(svg(&def, None), svg(&again, None));
    assert_eq!(dot(&def), dot(&again));
}

#[test]
fn dot_describes_the_same_graph() {
    let graph = dot(&parse(TINY));
    expect![[r#"
        digraph "tiny" {
          graph [rankdir=LR, fontname="sans-serif", label="tiny", labelloc=t];
          node [fontname="sans-serif", fontsize=12];
          edge [fontname="sans-serif", fontsize=11];
          "start-0" [shape=circle, width=0.35, label="", xlabel="", tooltip="start event"];
          "step-review" [shape=box, style=rounded, label="review\nReview order\n{{order.number}}", tooltip="review (user task): Review order {{order.number}}"];
          "step-route" [shape=diamond, width=0.5, height=0.5, fixedsize=true, label="X", xlabel="route", tooltip="route (exclusive gateway)"];
          "step-big" [shape=circle, penwidth=3, width=0.35, label="", xlabel="big", tooltip="big (end event)"];
          "step-small" [shape=circle, penwidth=3, width=0.35, label="", xlabel="small", tooltip="small (end event)"];
          "start-0" -> "step-review";
          "step-review" -> "step-route";
          "step-route" -> "step-big" [label="amount > 100"];
          "step-route" -> "step-small" [label="otherwise", dir=both, arrowtail=tee];
        }
    "#]]
    .assert_eq(&graph);
}

#[test]
fn wrapping_fits_the_width_and_marks_what_it_cuts() {
    assert_eq!(
        wrap("Approve quote now", 200.0, 12.0, 2),
        ["Approve quote now"]
    );
    let lines = wrap(
        "Approve the discounted quote of the customer today",
        80.0,
        12.0,
        2,
    );
    assert_eq!(lines.len(), 2);
    assert!(lines[1].ends_with('\u{2026}'));
    for line in &lines {
        assert!(text_width(line, 12.0) <= 80.0, "{line}");
    }
    let cut = wrap("quote.customer.email.address", 90.0, 12.0, 3);
    assert!(cut.len() > 1 && cut[0].ends_with('.'), "{cut:?}");
    assert!(wrap("", 50.0, 12.0, 2).is_empty());
}

#[test]
fn fitting_in_order_keeps_the_gaps_and_the_wishes() {
    let ones = [1.0; 3];
    assert_eq!(fit_in_order(&[0.0, 100.0], &[50.0], &ones), [0.0, 100.0]);
    assert_eq!(fit_in_order(&[0.0, 0.0], &[50.0], &ones), [-25.0, 25.0]);
    assert_eq!(
        fit_in_order(&[10.0, 0.0, 200.0], &[20.0, 20.0], &ones),
        [-5.0, 15.0, 200.0]
    );
    // A heavier item moves less.
    assert_eq!(
        fit_in_order(&[0.0, 0.0], &[40.0], &[3.0, 1.0]),
        [-10.0, 30.0]
    );
}
