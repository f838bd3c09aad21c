//! The reserved arguments `device:` and `resources:`, and declared value
//! ranges of params.

use super::*;

impl<'a> Checker<'a> {
    /// `resources: {cpus: 8, mem: "32G", gpus: 1, time: "4:00:00", partition: "gpu", shards: 16}`.
    pub(super) fn resources(&mut self, file: FileId, expr: &Expr) -> NodeResources {
        const FIELDS: &str = "cpus (int), mem (\"16G\", \"512M\" or MiB as an int), gpus (int), time (\"HH:MM:SS\", \"D-HH:MM:SS\" or minutes as an int), partition (string), shards (int)";
        let mut r = NodeResources::default();
        let ExprKind::Record(fields) = &expr.kind else {
            self.error(
                file,
                expr.span,
                "`resources` must be a record",
                "not a record",
                format!("write e.g. `resources: {{cpus: 8, mem: \"32G\"}}`; fields: {FIELDS}"),
            );
            return r;
        };
        for (name, value) in fields {
            let v = self.reserved_value(file, value);
            let ok = match (name.text.as_str(), &v) {
                ("cpus", Some(Value::Int(n))) if *n >= 1 => {
                    r.cpus = Some(*n as usize);
                    true
                }
                ("gpus", Some(Value::Int(n))) if *n >= 0 => {
                    r.gpus = Some(*n as u32);
                    true
                }
                ("mem", Some(Value::Int(n))) if *n >= 1 => {
                    r.mem_mb = Some(*n as u64);
                    true
                }
                ("mem", Some(Value::Str(s))) => match parse_mem_mb(s) {
                    Some(m) => {
                        r.mem_mb = Some(m);
                        true
                    }
                    None => false,
                },
                ("time", Some(Value::Int(n))) if *n >= 1 => {
                    r.time_min = Some(*n as u64);
                    true
                }
                ("time", Some(Value::Str(s))) => match parse_time_min(s) {
                    Some(m) => {
                        r.time_min = Some(m);
                        true
                    }
                    None => false,
                },
                ("partition", Some(Value::Str(s))) if !s.trim().is_empty() => {
                    r.partition = Some(s.clone());
                    true
                }
                ("shards", Some(Value::Int(n))) if *n >= 1 => {
                    r.shards = Some(*n as usize);
                    true
                }
                ("cpus" | "gpus" | "mem" | "time" | "partition" | "shards", _) => false,
                (other, _) => {
                    self.error(
                        file,
                        name.span,
                        format!("unknown resource `{other}`"),
                        "not a resource",
                        format!("`resources` takes: {FIELDS}"),
                    );
                    continue;
                }
            };
            if !ok {
                self.error(
                    file,
                    value.span,
                    format!("bad value for resource `{}`", name.text),
                    "not a valid value",
                    format!("`resources` takes: {FIELDS}"),
                );
            }
        }
        r
    }

    /// Numbers outside a param's declared range are errors here, before
    /// anything runs (`t: 1e308` once wrote an all-NaN model).
    pub(super) fn check_range(
        &mut self,
        file: FileId,
        expr: &Expr,
        arg: &Arg,
        param: &Param,
        spec: &OpSpec,
        map: Option<&MapCtx>,
    ) {
        let Some((lo, hi)) = param.range else { return };
        let bad = match arg {
            Arg::Lit(v) | Arg::Param { value: v, .. } => param.out_of_range(v),
            // A map element is checked through each of the values it takes.
            Arg::MapVar => map.and_then(|m| match &m.over {
                Over::Values { values, .. } => values.iter().find_map(|v| param.out_of_range(v)),
                Over::Exprs(items) => items.iter().find_map(|e| match e.kind {
                    ExprKind::Int(i, _) => param.out_of_range(&Value::Int(i)),
                    ExprKind::Float(f, _) => param.out_of_range(&Value::Float(f)),
                    _ => None,
                }),
                Over::Static(_) | Over::Unknown => None,
            }),
            _ => None,
        };
        if let Some(x) = bad {
            let shown = if x.is_nan() {
                "NaN".to_string()
            } else if x.fract() == 0.0 && x.abs() < 1e16 {
                format!("{x}")
            } else {
                format!("{x:?}") // 1e308 rather than 309 digits
            };
            let from = match arg {
                Arg::Param { name, .. } => format!(" (from param `{name}`)"),
                _ => String::new(),
            };
            let (bounds, takes) = if hi == f64::INFINITY {
                (format!("below {lo}"), format!("from {lo} up"))
            } else {
                (
                    format!("outside [{lo}, {hi}]"),
                    format!("from {lo} to {hi}"),
                )
            };
            self.error(
                file,
                expr.span,
                format!(
                    "argument `{}` of `{}` is {shown}{from}, {bounds}",
                    param.name, spec.name
                ),
                "out of range",
                format!("`{}` takes numbers {takes}: {}", param.name, param.doc),
            );
        }
    }

    pub(super) fn device(&mut self, file: FileId, expr: &Expr) -> Option<DeviceRequest> {
        let text = match &expr.kind {
            ExprKind::Str(s) => Some(s.value.clone()),
            ExprKind::Ref { name, fields } => {
                let (full, rest) = self.resolve(file, name, fields);
                match self.decls.get(&full) {
                    Some(Decl::Param {
                        value: Value::Str(s),
                        ..
                    }) if rest.is_empty() => Some(s.clone()),
                    _ => None,
                }
            }
            _ => None,
        };
        let request = text
            .as_deref()
            .and_then(|t| crate::device::parse_device(t).ok());
        if request.is_none() {
            let got = match &text {
                Some(t) => format!("\"{t}\""),
                None => "this".to_string(),
            };
            self.error(
                file,
                expr.span,
                format!("bad device {got}"),
                "not a device",
                "`device` is one of \"auto\", \"cpu\", \"cuda\" or \"cuda:N\" (N the GPU index)",
            );
        }
        request
    }
}

/// A memory size in MiB: `"512M"`, `"32G"`, `"1T"`, `"2048"` (MiB); the
/// suffix may be lower case and may end in `B` (`"16GB"`).
pub fn parse_mem_mb(text: &str) -> Option<u64> {
    let t = text.trim().to_ascii_uppercase();
    let t = t.strip_suffix('B').unwrap_or(&t);
    let (num, mult) = match t.chars().last()? {
        'K' => (&t[..t.len() - 1], 1.0 / 1024.0),
        'M' => (&t[..t.len() - 1], 1.0),
        'G' => (&t[..t.len() - 1], 1024.0),
        'T' => (&t[..t.len() - 1], 1024.0 * 1024.0),
        _ => (t, 1.0),
    };
    let n: f64 = num.trim().parse().ok()?;
    let mb = (n * mult).ceil();
    (n.is_finite() && mb >= 1.0).then_some(mb as u64)
}

/// A time limit in minutes, in Slurm's spellings: `"MM"`, `"MM:SS"`,
/// `"HH:MM:SS"`, `"D-HH"`, `"D-HH:MM"`, `"D-HH:MM:SS"`. Seconds round up.
pub fn parse_time_min(text: &str) -> Option<u64> {
    let t = text.trim();
    let (days, rest) = match t.split_once('-') {
        Some((d, r)) => (d.parse::<u64>().ok()?, r),
        None => (0, t),
    };
    let parts: Vec<u64> = rest
        .split(':')
        .map(|p| p.parse::<u64>().ok())
        .collect::<Option<Vec<u64>>>()?;
    let dash = t.contains('-');
    let (h, m, s) = match (dash, parts.as_slice()) {
        (false, [m]) => (0, *m, 0),
        (false, [m, s]) if *s < 60 => (0, *m, *s),
        (_, [h, m, s]) if *m < 60 && *s < 60 && (!dash || *h < 24) => (*h, *m, *s),
        (true, [h]) if *h < 24 => (*h, 0, 0),
        (true, [h, m]) if *h < 24 && *m < 60 => (*h, *m, 0),
        _ => return None,
    };
    let total = days * 24 * 60 + h * 60 + m + s.div_ceil(60);
    (total >= 1).then_some(total)
}
