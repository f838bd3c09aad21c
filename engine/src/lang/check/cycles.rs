//! Cycles among nodes, reported with every node on the cycle.

use super::*;

impl<'a> Checker<'a> {
    /// Reports every dependency cycle among the nodes.
    pub(super) fn cycles(&mut self, nodes: &[ir::Node]) {
        let index = ir::node_index(nodes);
        let deps: Vec<Vec<usize>> = nodes
            .iter()
            .map(|n| {
                let mut out = Vec::new();
                for arg in n.args.values().chain(n.map.as_ref().map(|m| &m.over)) {
                    collect_nodes(arg, &mut |name| {
                        if let Some(&i) = index.get(name) {
                            out.push(i);
                        }
                    });
                }
                out
            })
            .collect();
        // Depth-first, iteratively (pipelines may be long chains): 0
        // unvisited, 1 on the current path, 2 done.
        let mut state = vec![0u8; nodes.len()];
        for start in 0..nodes.len() {
            if state[start] != 0 {
                continue;
            }
            let mut path: Vec<(usize, usize)> = vec![(start, 0)];
            state[start] = 1;
            while let Some(&mut (at, ref mut edge)) = path.last_mut() {
                let Some(&next) = deps[at].get(*edge) else {
                    state[at] = 2;
                    path.pop();
                    continue;
                };
                *edge += 1;
                match state[next] {
                    0 => {
                        state[next] = 1;
                        path.push((next, 0));
                    }
                    1 => {
                        let from = path.iter().position(|&(n, _)| n == next).unwrap_or(0);
                        let cycle: Vec<usize> = path[from..].iter().map(|&(n, _)| n).collect();
                        self.report_cycle(&cycle, nodes);
                    }
                    _ => {}
                }
            }
        }
    }

    pub(super) fn report_cycle(&mut self, cycle: &[usize], nodes: &[ir::Node]) {
        const SHOWN: usize = 12;
        let mut names: Vec<&str> = cycle
            .iter()
            .take(SHOWN)
            .map(|&i| nodes[i].name.as_str())
            .collect();
        let more = cycle.len().saturating_sub(SHOWN);
        let tail = if more > 0 {
            format!(" -> ... ({more} more)")
        } else {
            String::new()
        };
        names.push("");
        let path = format!(
            "{}{tail} -> {}",
            names[..names.len() - 1].join(" -> "),
            nodes[cycle[0]].name
        );
        let first = &nodes[cycle[0]];
        let mut diag = self
            .src(first.span.file)
            .error(
                first.span.span,
                format!("dependency cycle: {path}"),
                "this node depends on itself",
            )
            .help("a node cannot use its own output, directly or through other nodes; remove one of these references");
        for &i in cycle.iter().skip(1).take(SHOWN) {
            let n = &nodes[i];
            if n.span.file == first.span.file {
                diag = diag.label(n.span.span, "on the cycle");
            }
        }
        self.errors.push(diag);
    }
}
