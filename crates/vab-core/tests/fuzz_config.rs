//! Mutation fuzzing of the training-configuration reader: every shipped configuration, with
//! bytes flipped, cut, spliced or inserted, parses and validates to `Ok` or `Err`, never a panic.
//! Seeded; `VAB_FUZZ_CASES` cases per file (default 300).

use std::panic::catch_unwind;

use vab_core::config::TrainConfig;

fn mutate(input: &[u8], state: &mut u64) -> Vec<u8> {
    let mut next = || {
        *state ^= *state >> 12;
        *state ^= *state << 25;
        *state ^= *state >> 27;
        state.wrapping_mul(0x2545_F491_4F6C_DD1D) as usize
    };
    let mut out = input.to_vec();
    let at = next() % out.len();
    match next() % 4 {
        0 => out[at] ^= 1 << (next() % 8),
        1 => out.truncate(at),
        2 => {
            let from = next() % input.len();
            let len = (1 + next() % 40).min(input.len() - from).min(out.len() - at);
            out[at..at + len].copy_from_slice(&input[from..from + len]);
        }
        _ => {
            // Digits and TOML punctuation, where a value or a key is likely to break.
            let pieces: [&[u8]; 8] = [b"1e400", b"-", b"nan", b"\"", b"[", b"=", b"\n[vab]\n", b"99999999999999999999"];
            out.splice(at..at, pieces[next() % pieces.len()].iter().copied());
        }
    }
    out
}

#[test]
fn shipped_configurations_survive_mutations() {
    std::panic::set_hook(Box::new(|_| {}));
    let cases: usize = std::env::var("VAB_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(300);
    let configs = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs");
    for name in ["cpu-cifar10.toml", "paper-cifar10.toml", "cpu-surrogate.toml"] {
        let text = std::fs::read(configs.join(name)).unwrap();
        let mut state = 0x9E37_79B9_7F4A_7C15;
        let mut accepted = 0;
        for case in 0..cases {
            let bytes = mutate(&text, &mut state);
            let outcome = catch_unwind(|| TrainConfig::from_toml(&String::from_utf8_lossy(&bytes)).is_ok());
            let Ok(ok) = outcome else { panic!("{name}, case {case}: the reader panicked on:\n{}", String::from_utf8_lossy(&bytes)) };
            accepted += ok as usize;
        }
        eprintln!("{name}: {cases} cases, {accepted} accepted, 0 panics");
        assert!(accepted < cases, "{name}: every mutation was accepted");
    }
}
