//! What deploy/monitoring's dashboard and alert rules ask of a node: the
//! metric selectors in their PromQL, read without a PromQL or YAML library,
//! and checked against a node's Prometheus exposition.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{bail, Context, Result};

/// (label, operator, value); operators `=`, `!=`, `=~`, `!~`.
pub type Matcher = (String, String, String);

/// One metric selector of an expression: `name{label op "value", ...}`.
#[derive(Debug, Clone, PartialEq)]
pub struct Selector {
    pub name: String,
    pub matchers: Vec<Matcher>,
}

const AGGREGATIONS: &[&str] = &[
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
];
const FUNCTIONS: &[&str] = &[
    "abs",
    "absent",
    "absent_over_time",
    "acos",
    "acosh",
    "asin",
    "asinh",
    "atan",
    "atanh",
    "avg_over_time",
    "ceil",
    "changes",
    "clamp",
    "clamp_max",
    "clamp_min",
    "cos",
    "cosh",
    "count_over_time",
    "day_of_month",
    "day_of_week",
    "day_of_year",
    "days_in_month",
    "deg",
    "delta",
    "deriv",
    "double_exponential_smoothing",
    "end",
    "exp",
    "floor",
    "histogram_avg",
    "histogram_count",
    "histogram_fraction",
    "histogram_quantile",
    "histogram_stddev",
    "histogram_stdvar",
    "histogram_sum",
    "holt_winters",
    "hour",
    "idelta",
    "increase",
    "irate",
    "label_join",
    "label_replace",
    "last_over_time",
    "ln",
    "log10",
    "log2",
    "mad_over_time",
    "max_over_time",
    "min_over_time",
    "minute",
    "month",
    "pi",
    "predict_linear",
    "present_over_time",
    "quantile_over_time",
    "rad",
    "rate",
    "resets",
    "round",
    "scalar",
    "sgn",
    "sin",
    "sinh",
    "sort",
    "sort_by_label",
    "sort_by_label_desc",
    "sort_desc",
    "sqrt",
    "start",
    "stddev_over_time",
    "stdvar_over_time",
    "sum_over_time",
    "tan",
    "tanh",
    "time",
    "timestamp",
    "vector",
    "year",
];
/// Keywords followed by a parenthesised list of label names, not an expression.
const LABEL_LISTS: &[&str] = &["by", "without", "on", "ignoring", "group_left", "group_right"];
const KEYWORDS: &[&str] = &["and", "or", "unless", "bool", "offset", "atan2", "inf", "nan"];

/// Every metric selector in a PromQL expression. Fails on what it cannot
/// read (an unknown function, a selector without a metric name, an
/// unterminated string), so nothing is skipped silently.
pub fn selectors(expr: &str) -> Result<Vec<Selector>> {
    let s: Vec<char> = expr.chars().collect();
    let mut out: Vec<Selector> = Vec::new();
    let mut i = 0;
    // Whether the token just read was a metric name, so a `{` that follows
    // is its label matchers.
    let mut after_name = false;
    while i < s.len() {
        let c = s[i];
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        let was_name = std::mem::take(&mut after_name);
        match c {
            '"' | '\'' | '`' => i = string_end(&s, i)?.0,
            '[' => i = skip_to(&s, i, ']')?,
            '{' => {
                let (matchers, end) = matchers(&s, i)?;
                match out.last_mut() {
                    Some(sel) if was_name => sel.matchers = matchers,
                    _ => bail!("a selector without a metric name in {expr:?}"),
                }
                i = end;
            }
            // Grafana variables: `$name`, `${name}`, `$__rate_interval`.
            '$' => {
                i += 1;
                if s.get(i) == Some(&'{') {
                    i = skip_to(&s, i, '}')?;
                } else {
                    i = word_end(&s, i);
                }
            }
            c if c.is_ascii_digit() || (c == '.' && s.get(i + 1).is_some_and(char::is_ascii_digit)) => {
                // Numbers and durations (`0.99`, `1e3`, `5m`).
                while i < s.len() && (s[i].is_ascii_alphanumeric() || s[i] == '.' || s[i] == '_') {
                    i += 1;
                }
            }
            c if c.is_ascii_alphabetic() || c == '_' || c == ':' => {
                let end = word_end(&s, i);
                let word: String = s[i..end].iter().collect();
                i = end;
                let next = s[i..].iter().copied().find(|c| !c.is_whitespace());
                if LABEL_LISTS.contains(&word.as_str()) {
                    if next == Some('(') {
                        let open = i + s[i..].iter().position(|&c| c == '(').unwrap_or(0);
                        i = skip_to(&s, open, ')')?;
                    }
                } else if KEYWORDS.contains(&word.as_str()) || AGGREGATIONS.contains(&word.as_str()) {
                } else if next == Some('(') {
                    if !FUNCTIONS.contains(&word.as_str()) {
                        bail!("unknown function {word:?} in {expr:?}");
                    }
                } else {
                    out.push(Selector { name: word, matchers: Vec::new() });
                    after_name = true;
                }
            }
            _ => i += 1,
        }
    }
    Ok(out)
}

fn word_end(s: &[char], mut i: usize) -> usize {
    while i < s.len() && (s[i].is_ascii_alphanumeric() || s[i] == '_' || s[i] == ':') {
        i += 1;
    }
    i
}

/// Index after the `close` that ends what starts at `i`, strings skipped.
fn skip_to(s: &[char], mut i: usize, close: char) -> Result<usize> {
    let open = s[i];
    let mut depth = 0;
    while i < s.len() {
        match s[i] {
            '"' | '\'' | '`' => {
                i = string_end(s, i)?.0;
                continue;
            }
            c if c == open => depth += 1,
            c if c == close => {
                depth -= 1;
                if depth == 0 {
                    return Ok(i + 1);
                }
            }
            _ => {}
        }
        i += 1;
    }
    bail!("unclosed {open:?}")
}

/// The index after the string literal at `i`, and its value.
fn string_end(s: &[char], i: usize) -> Result<(usize, String)> {
    let quote = s[i];
    let mut value = String::new();
    let mut j = i + 1;
    while j < s.len() {
        match s[j] {
            '\\' if quote != '`' => {
                value.extend(s.get(j + 1));
                j += 2;
            }
            c if c == quote => return Ok((j + 1, value)),
            c => {
                value.push(c);
                j += 1;
            }
        }
    }
    bail!("unterminated string")
}

fn matchers(s: &[char], mut i: usize) -> Result<(Vec<Matcher>, usize)> {
    let mut out = Vec::new();
    i += 1;
    loop {
        while i < s.len() && (s[i].is_whitespace() || s[i] == ',') {
            i += 1;
        }
        match s.get(i) {
            Some('}') => return Ok((out, i + 1)),
            None => bail!("unclosed label matchers"),
            _ => {}
        }
        let end = word_end(s, i);
        let label: String = s[i..end].iter().collect();
        i = end;
        while s.get(i).is_some_and(|c| c.is_whitespace()) {
            i += 1;
        }
        let op: String = s[i..].iter().take_while(|c| matches!(c, '=' | '!' | '~')).collect();
        if label.is_empty() || !["=", "!=", "=~", "!~"].contains(&op.as_str()) {
            bail!("bad label matcher at {:?}", s[i..].iter().collect::<String>());
        }
        i += op.len();
        while s.get(i).is_some_and(|c| c.is_whitespace()) {
            i += 1;
        }
        if !matches!(s.get(i), Some('"' | '\'' | '`')) {
            bail!("label {label:?}: value is not a string");
        }
        let (end, value) = string_end(s, i)?;
        out.push((label, op, value));
        i = end;
    }
}

/// Every PromQL expression of a Grafana dashboard, with where it is: each
/// `expr` at any depth (panels, rows' panels) and each template variable's
/// query (`label_values(SELECTOR, label)`, `query_result(EXPR)`).
pub fn dashboard_exprs(dashboard: &serde_json::Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    walk(dashboard, "dashboard", &mut out);
    for var in dashboard["templating"]["list"].as_array().into_iter().flatten() {
        let q = var["query"].as_str().or_else(|| var["query"]["query"].as_str()).unwrap_or("");
        let at = format!("variable {}", var["name"]);
        if let Some(inner) = q.strip_prefix("label_values(").and_then(|r| r.strip_suffix(')')) {
            // With one argument it is only a label name.
            if let Some((sel, _label)) = inner.rsplit_once(',') {
                out.push((at, sel.trim().to_string()));
            }
        } else if let Some(inner) = q.strip_prefix("query_result(").and_then(|r| r.strip_suffix(')')) {
            out.push((at, inner.to_string()));
        }
    }
    out
}

fn walk(v: &serde_json::Value, at: &str, out: &mut Vec<(String, String)>) {
    match v {
        serde_json::Value::Object(m) => {
            let here = m.get("title").and_then(|t| t.as_str()).map_or(at.to_string(), |t| format!("panel {t:?}"));
            if let Some(e) = m.get("expr").and_then(|e| e.as_str()) {
                out.push((here.clone(), e.to_string()));
            }
            for (k, child) in m {
                if k != "templating" {
                    walk(child, &here, out);
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|c| walk(c, at, out)),
        _ => {}
    }
}

/// The `expr:` of every rule in a Prometheus rule file, named by its
/// `alert:` or `record:`. Reads one-line scalars (plain or quoted) and `|`
/// or `>` blocks; anything else is an error, as is a rule without an expr.
pub fn rule_exprs(yaml: &str) -> Result<Vec<(String, String)>> {
    let lines: Vec<&str> = yaml.lines().collect();
    let mut out = Vec::new();
    let mut rules = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        let body = line.trim_start();
        let indent = line.len() - body.len();
        let (body, indent) = match body.strip_prefix("- ") {
            Some(rest) => (rest.trim_start(), line.len() - rest.trim_start().len()),
            None => (body, indent),
        };
        i += 1;
        if body.starts_with('#') {
            continue;
        }
        if let Some(name) = body.strip_prefix("alert:").or_else(|| body.strip_prefix("record:")) {
            rules.push(name.trim().to_string());
            continue;
        }
        let Some(value) = body.strip_prefix("expr:") else { continue };
        let at = format!("rule {}", rules.last().map_or("?", String::as_str));
        let value = value.trim();
        let expr = if matches!(value, "|" | "|-" | "|+" | ">" | ">-" | ">+") {
            let mut block = Vec::new();
            while i < lines.len() {
                let l = lines[i];
                let deeper = l.len() - l.trim_start().len() > indent;
                if !(deeper || l.trim().is_empty()) {
                    break;
                }
                block.push(l.trim());
                i += 1;
            }
            block.join("\n")
        } else if let Some(q) = value.strip_prefix('"') {
            match q.strip_suffix('"') {
                Some(inner) if !inner.contains('\\') => inner.to_string(),
                _ => bail!("line {i}: a double-quoted expr must be one line without escapes"),
            }
        } else if let Some(q) = value.strip_prefix('\'') {
            q.strip_suffix('\'')
                .with_context(|| format!("line {i}: a single-quoted expr must be one line"))?
                .replace("''", "'")
        } else if value.is_empty() {
            bail!("line {i}: expr continues on the next lines as a plain scalar: use a | block")
        } else {
            // A plain scalar ends at a comment.
            value.split(" #").next().unwrap_or(value).trim().to_string()
        };
        if expr.trim().is_empty() {
            bail!("line {i}: empty expr");
        }
        out.push((at, expr));
    }
    if out.len() != rules.len() {
        bail!("{} rules but {} exprs", rules.len(), out.len());
    }
    Ok(out)
}

/// A node's `/metrics`: the labels of every sample, by sample name, and the
/// `# TYPE` of each family.
#[derive(Debug, Default)]
pub struct Exposition {
    pub samples: BTreeMap<String, Vec<BTreeMap<String, String>>>,
    pub types: BTreeMap<String, String>,
}

impl Exposition {
    pub fn parse(text: &str) -> Result<Exposition> {
        let mut e = Exposition::default();
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let mut parts = rest.split_whitespace();
                if let (Some(name), Some(kind)) = (parts.next(), parts.next()) {
                    e.types.insert(name.to_string(), kind.to_string());
                }
                continue;
            }
            if line.starts_with('#') {
                continue;
            }
            let s: Vec<char> = line.chars().collect();
            let end = word_end(&s, 0);
            let name: String = s[..end].iter().collect();
            if name.is_empty() {
                bail!("bad exposition line {line:?}");
            }
            let labels = if s.get(end) == Some(&'{') {
                let (m, _) = matchers(&s, end).with_context(|| format!("labels of {line:?}"))?;
                m.into_iter().map(|(l, _, v)| (l, v)).collect()
            } else {
                BTreeMap::new()
            };
            e.samples.entry(name).or_default().push(labels);
        }
        Ok(e)
    }

    /// Why `sel` would select nothing from this node, or None. A histogram
    /// is queried through its `_bucket`, `_sum` and `_count` series, never by
    /// its family name; a counter has no `_count`.
    pub fn problem(&self, sel: &Selector) -> Option<String> {
        let name = &sel.name;
        if let Some(kind @ ("histogram" | "summary")) = self.types.get(name).map(String::as_str) {
            return Some(format!("{name} is a {kind}: query {name}_bucket, _sum or _count"));
        }
        let Some(series) = self.samples.get(name) else {
            let family = ["_bucket", "_sum", "_count"].iter().find_map(|s| name.strip_suffix(s));
            return Some(match family.and_then(|f| self.types.get(f)) {
                Some(kind) => format!("{name}: {} is a {kind}", family.unwrap_or_default()),
                None => format!("{name} is not exported"),
            });
        };
        for (label, op, value) in &sel.matchers {
            if TARGET_LABELS.contains(&label.as_str()) {
                continue;
            }
            let values: BTreeSet<&str> = series.iter().filter_map(|l| l.get(label).map(String::as_str)).collect();
            if values.is_empty() {
                return Some(format!("{name} has no label {label:?}"));
            }
            // Grafana fills `$var` in; only literal values can be checked.
            if value.contains('$') {
                continue;
            }
            let literals: Vec<&str> = match op.as_str() {
                "=" | "!=" => vec![value.as_str()],
                _ if value.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '|') => {
                    value.split('|').collect()
                }
                _ => Vec::new(),
            };
            if let Some(missing) = literals.iter().find(|v| !values.contains(*v)) {
                return Some(format!(
                    "{name}{{{label}{op}{value:?}}}: no series has {label}={missing:?} (has {values:?})"
                ));
            }
        }
        None
    }
}

/// Metrics Prometheus makes itself for every target, not the node.
pub const SCRAPE_SERIES: &[&str] = &["up"];
/// Labels Prometheus attaches to every series of a target.
pub const TARGET_LABELS: &[&str] = &["instance", "job"];

/// Every problem of every expression: `where: what`.
pub fn problems(exposition: &Exposition, exprs: &[(String, String)]) -> Vec<String> {
    let mut out = Vec::new();
    for (at, expr) in exprs {
        match selectors(expr) {
            Err(e) => out.push(format!("{at}: {e:#}")),
            Ok(sels) if sels.is_empty() => out.push(format!("{at}: no metric in {expr:?}")),
            Ok(sels) => out.extend(
                sels.iter()
                    .filter(|s| !SCRAPE_SERIES.contains(&s.name.as_str()))
                    .filter_map(|s| exposition.problem(s))
                    .map(|p| format!("{at}: {p}")),
            ),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(expr: &str) -> Vec<String> {
        selectors(expr).unwrap().into_iter().map(|s| s.name).collect()
    }

    #[test]
    fn selectors_skip_functions_keywords_labels_strings_and_variables() {
        let e = r#"histogram_quantile(0.99, sum by (le) (rate(a_bucket{instance=~"$instance"}[$__rate_interval])))
            / on (instance) group_left(pop) b offset 1h > bool 1e-3 and c{x="y,}z"} unless ${v}"#;
        assert_eq!(names(e), ["a_bucket", "b", "c"]);
        let s = selectors(r#"x{a="1", b!~'p|q'}"#).unwrap();
        assert_eq!(s[0].matchers, vec![("a".into(), "=".into(), "1".into()), ("b".into(), "!~".into(), "p|q".into())]);
        assert_eq!(names("rate(x[5m] offset 1h) * 0.5"), ["x"]);
        assert_eq!(names(r#"label_replace(x, "dst", "$1", "src", "(.*)")"#), ["x"]);
        assert!(selectors("sume(rate(x[5m]))").is_err(), "unknown function");
        assert!(selectors(r#"{__name__="x"}"#).is_err(), "no metric name");
        assert!(selectors(r#"x{a="1}"#).is_err(), "unterminated");
    }

    #[test]
    fn rule_exprs_read_plain_quoted_and_block_scalars_and_refuse_the_rest() {
        let y = "groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: up == 0 # c\n        for: 1m\n\
                 \x20     - alert: B\n        expr: |\n          a\n            > 1\n        labels: {}\n\
                 \x20     - record: r:c\n        expr: \"c\"\n";
        let got = rule_exprs(y).unwrap();
        assert_eq!(got[0], ("rule A".to_string(), "up == 0".to_string()));
        assert_eq!(got[1].1, "a\n> 1");
        assert_eq!(got[2].1, "c");
        assert!(rule_exprs("- alert: A\n  expr:\n    a > 1\n").is_err(), "multi-line plain scalar");
        assert!(rule_exprs("- alert: A\n  for: 1m\n").is_err(), "rule without expr");
    }

    #[test]
    fn the_exposition_check_knows_histograms_and_label_values() {
        let text = "# TYPE h histogram\nh_bucket{le=\"0.1\"} 1\nh_sum 1\nh_count 1\n\
                    # TYPE c counter\nc{k=\"a\"} 1\nc{k=\"b\"} 0\n";
        let e = Exposition::parse(text).unwrap();
        let sel = |expr: &str| selectors(expr).unwrap().remove(0);
        for ok in [
            "h_bucket",
            "h_count",
            "c",
            r#"c{k="a",instance=~"$i"}"#,
            r#"c{k=~"a|b"}"#,
            r#"c{k!="b"}"#,
            r#"c{k=~".*"}"#,
        ] {
            assert_eq!(e.problem(&sel(ok)), None, "{ok}");
        }
        for bad in ["h", "c_count", "d", r#"c{k="z"}"#, r#"c{k=~"a|z"}"#, r#"c{j="a"}"#] {
            assert!(e.problem(&sel(bad)).is_some(), "{bad}");
        }
    }
}
