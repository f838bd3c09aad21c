//! The launchers' signature table (`cuda::SIGNATURES`, which every launch
//! is checked against before it reaches the driver) says exactly what the
//! `.cu` sources declare: every `__global__` entry point is in it, under its
//! file's family, with its C parameter list; and it lists nothing else.
//! Read from the source text, so this needs no GPU and no NVRTC.

use flow_kernels::cuda::{self, Arg, Elem};

/// The kind of one C parameter declaration such as `const bf16* __restrict__ q`.
fn kind_of(declaration: &str) -> Result<Arg, String> {
    let words: Vec<&str> = declaration
        .split(|c: char| c.is_whitespace() || c == '*')
        .filter(|w| !w.is_empty() && *w != "__restrict__")
        .collect();
    let pointer = declaration.contains('*');
    let constant = words.first() == Some(&"const");
    let words: Vec<&str> = words.into_iter().filter(|w| *w != "const").collect();
    // The last word is the parameter's name; the rest its type.
    let ty = words[..words.len().saturating_sub(1)].join(" ");
    let elem = |ty: &str| match ty {
        "bf16" => Ok(Elem::Bf16),
        "float" => Ok(Elem::F32),
        "double" => Ok(Elem::F64),
        "int" => Ok(Elem::I32),
        other => Err(format!("unknown element type `{other}` in `{declaration}`")),
    };
    if pointer {
        let e = elem(&ty)?;
        return Ok(if constant { Arg::In(e) } else { Arg::Out(e) });
    }
    match ty.as_str() {
        "int" => Ok(Arg::Int),
        "long long" => Ok(Arg::Long),
        "float" => Ok(Arg::Float),
        "double" => Ok(Arg::Double),
        "AttnDims" => Ok(Arg::AttnDims),
        other => Err(format!(
            "unknown parameter type `{other}` in `{declaration}`"
        )),
    }
}

/// (entry point, parameter kinds) of every `__global__` function in a file.
fn declared(source: &str) -> Vec<(String, Vec<Arg>)> {
    let mut found = Vec::new();
    let mut rest = source;
    while let Some(at) = rest.find("__global__") {
        rest = &rest[at + "__global__".len()..];
        let open = rest.find('(').expect("a parameter list");
        let name = rest[..open].split_whitespace().last().unwrap().to_string();
        let close = open + rest[open..].find(')').expect("a closing parenthesis");
        let params = rest[open + 1..close]
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(|p| kind_of(p).unwrap_or_else(|e| panic!("{name}: {e}")))
            .collect();
        found.push((name, params));
    }
    found
}

fn sources() -> Vec<(String, String)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("cuda");
    cuda::SOURCES
        .iter()
        .map(|k| {
            let text = std::fs::read_to_string(dir.join(format!("{}.cu", k.name))).unwrap();
            (k.name.to_string(), text)
        })
        .collect()
}

#[test]
fn every_kernel_entry_point_has_its_c_signature_in_the_launch_table() {
    let mut count = 0;
    for (family, text) in sources() {
        for (entry, params) in declared(&text) {
            count += 1;
            let sig = cuda::signature(&entry).unwrap_or_else(|| {
                panic!("{family}.cu: `{entry}` has no entry in cuda::SIGNATURES")
            });
            assert_eq!(
                sig.family, family,
                "`{entry}` is filed under the wrong family"
            );
            assert_eq!(
                sig.args, params,
                "{family}.cu: `{entry}`'s table entry differs from its C parameters"
            );
        }
    }
    assert_eq!(
        count,
        cuda::SIGNATURES.len(),
        "the table lists an entry point no .cu file declares"
    );
}

#[test]
fn the_parser_reads_pointer_constness_and_scalar_types() {
    // Declarations written out by hand, so a parser that ignores `const` or
    // maps `long long` to int fails here rather than agreeing with a wrong table.
    assert_eq!(
        kind_of("const bf16* __restrict__ q").unwrap(),
        Arg::In(Elem::Bf16)
    );
    assert_eq!(
        kind_of("float* __restrict__ m").unwrap(),
        Arg::Out(Elem::F32)
    );
    assert_eq!(kind_of("double* acc").unwrap(), Arg::Out(Elem::F64));
    assert_eq!(kind_of("const int* doc_ids").unwrap(), Arg::In(Elem::I32));
    assert_eq!(kind_of("long long n").unwrap(), Arg::Long);
    assert_eq!(kind_of("int dim").unwrap(), Arg::Int);
    assert_eq!(kind_of("double norm_eps").unwrap(), Arg::Double);
    assert_eq!(kind_of("AttnDims d").unwrap(), Arg::AttnDims);
    assert!(kind_of("half* x").is_err());
}
