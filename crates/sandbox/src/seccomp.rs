//! The runtime's seccomp policy: `seccomp/<arch>.json`, compiled once per [`crate::Host`] with seccompiler and handed
//! to `ignis-init` (in the `ShellConfig`) as BPF programs, which it installs in the runtime's process
//! right before `execve`.
//!
//! The file holds, besides seccompiler's JSON (`filters`), the order in which the filters are installed (`install`)
//! and the documented list of what is deliberately refused (`refused`). Semantics of the two filters:
//! - `allow`: an allow-list; a syscall not on it fails with `EPERM`. `clone` is allowed only without `CLONE_NEW*`
//!   flags, `personality` only with the default persona (or the query value), `mknod`/`mknodat` only for regular
//!   files, FIFOs and sockets. A foreign architecture (e.g. the i386 ABI via `int 0x80`) kills the process.
//! - `families`: `socket` and `socketpair` of any family other than `AF_UNIX`, `AF_INET`, `AF_INET6` and
//!   `AF_NETLINK` fail with `EAFNOSUPPORT`, as on a kernel without that family (`AF_VSOCK` would reach the host's
//!   own port space: the network namespace does not isolate it, nor `AF_BLUETOOTH`, `AF_ALG`, ...).
//! - `netlink`: `AF_NETLINK` sockets of any protocol but `NETLINK_ROUTE` fail with `EPROTONOSUPPORT` (uevents, for
//!   one, would tell the sandbox of the host's devices).
//! - `enosys`: `clone3` fails with `ENOSYS` (its flags are in memory, out of a filter's reach), so libc falls back to
//!   `clone`. It is installed last: among filters that return the same action the kernel takes the data of the most
//!   recently installed one, so `ENOSYS` wins over the allow-list's `EPERM`.
//!
//! seccompiler emits one linear chain of comparisons (about 1500 instructions for this policy), which costs the
//! kernel more than a millisecond to attach (it emulates the filter for every syscall number to fill its cache of
//! always-allowed syscalls) and up to ~600 comparisons per filtered call. `optimize` re-lays each program out as
//! a binary search over intervals of syscall numbers with the same outcome (about 9 comparisons deep), keeping
//! seccompiler's argument checks as they are; by emulation it derives the new program from the old one, and a unit
//! test checks by emulation that both agree on every syscall number and on a set of argument values.

use std::io;

use serde::Deserialize;

#[cfg(target_arch = "x86_64")]
const POLICY: &str = include_str!("../seccomp/x86_64.json");
#[cfg(target_arch = "x86_64")]
const ARCH: seccompiler::TargetArch = seccompiler::TargetArch::x86_64;

/// The policy file, as far as Ignis reads it itself (seccompiler reads `filters`).
#[derive(Deserialize)]
struct Policy {
    install: Vec<String>,
    filters: serde_json::Value,
    #[allow(dead_code)]
    refused: Vec<Refused>,
}

#[derive(Deserialize)]
#[allow(dead_code)]
struct Refused {
    why: String,
    syscalls: Vec<String>,
}

/// One classic BPF instruction (`struct sock_filter`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Insn {
    code: u16,
    jt: u8,
    jf: u8,
    k: u32,
}

impl From<&seccompiler::sock_filter> for Insn {
    fn from(i: &seccompiler::sock_filter) -> Insn {
        Insn { code: i.code, jt: i.jt, jf: i.jf, k: i.k }
    }
}

const BPF_LD_W_ABS: u16 = 0x20;
const BPF_ALU_AND_K: u16 = 0x54;
const BPF_JA: u16 = 0x05;
const BPF_JEQ_K: u16 = 0x15;
const BPF_JGT_K: u16 = 0x25;
const BPF_JGE_K: u16 = 0x35;
const BPF_JSET_K: u16 = 0x45;
const BPF_RET_K: u16 = 0x06;
/// Offsets in `struct seccomp_data`.
const OFF_NR: u32 = 0;
const OFF_ARCH: u32 = 4;
#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 0xc000_003e;
/// Syscall numbers are emulated one by one up to here; all above must behave like the last one.
const NR_SPAN: u32 = 1024;

fn stmt(code: u16, k: u32) -> Insn {
    Insn { code, jt: 0, jf: 0, k }
}

/// The seccomp data a program sees.
pub(crate) struct Data {
    pub nr: u32,
    pub arch: u32,
    pub args: [u64; 6],
}

/// Runs `prog` (the subset of classic BPF that seccompiler and [`optimize`] emit) on `data`: its return value.
pub(crate) fn run(prog: &[Insn], data: &Data) -> io::Result<u32> {
    let bad = |what: &str, pc: usize| io::Error::new(io::ErrorKind::InvalidData, format!("BPF {what} at {pc}"));
    let (mut a, mut pc) = (0u32, 0usize);
    loop {
        let i = *prog.get(pc).ok_or_else(|| bad("runs off the end", pc))?;
        pc += 1;
        match i.code {
            BPF_LD_W_ABS => {
                a = match i.k {
                    OFF_NR => data.nr,
                    OFF_ARCH => data.arch,
                    k if (16..64).contains(&k) && k % 4 == 0 => {
                        let arg = data.args[(k as usize - 16) / 8];
                        // Little-endian seccomp_data: the low half first.
                        if k % 8 == 0 { arg as u32 } else { (arg >> 32) as u32 }
                    }
                    _ => return Err(bad("load", pc - 1)),
                }
            }
            BPF_ALU_AND_K => a &= i.k,
            BPF_JA => pc += i.k as usize,
            BPF_JEQ_K | BPF_JGT_K | BPF_JGE_K | BPF_JSET_K => {
                let yes = match i.code {
                    BPF_JEQ_K => a == i.k,
                    BPF_JGT_K => a > i.k,
                    BPF_JGE_K => a >= i.k,
                    _ => a & i.k != 0,
                };
                pc += usize::from(if yes { i.jt } else { i.jf });
            }
            BPF_RET_K => return Ok(i.k),
            _ => return Err(bad("instruction", pc - 1)),
        }
    }
}

/// What a program does with one syscall number: a constant result, or argument checks starting at this pc.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Ret(u32),
    Args(usize),
}

/// Follows `prog` for syscall `nr` (native architecture) until it returns or first loads an argument.
fn outcome(prog: &[Insn], nr: u32) -> io::Result<Outcome> {
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, format!("BPF {what} (syscall {nr})"));
    let (mut a, mut pc) = (0u32, 0usize);
    loop {
        let i = *prog.get(pc).ok_or_else(|| bad("runs off the end"))?;
        match i.code {
            BPF_LD_W_ABS if i.k == OFF_NR => a = nr,
            BPF_LD_W_ABS if i.k == OFF_ARCH => a = AUDIT_ARCH,
            BPF_LD_W_ABS => return Ok(Outcome::Args(pc)),
            BPF_RET_K => return Ok(Outcome::Ret(i.k)),
            BPF_ALU_AND_K => a &= i.k,
            BPF_JA => pc += i.k as usize,
            BPF_JEQ_K | BPF_JGT_K | BPF_JGE_K | BPF_JSET_K => {
                let yes = match i.code {
                    BPF_JEQ_K => a == i.k,
                    BPF_JGT_K => a > i.k,
                    BPF_JGE_K => a >= i.k,
                    _ => a & i.k != 0,
                };
                pc += usize::from(if yes { i.jt } else { i.jf });
            }
            _ => return Err(bad("instruction")),
        }
        pc += 1;
    }
}

/// The argument checks of `prog` from `entry` (a load of an argument) on, as a self-contained block: every
/// instruction reachable from there (it may not look at the syscall number or architecture again), with the
/// unreachable ones in between replaced by `RET default`.
fn args_block(prog: &[Insn], entry: usize, default: u32) -> io::Result<Vec<Insn>> {
    let bad = |what: &str, pc: usize| io::Error::new(io::ErrorKind::InvalidData, format!("BPF {what} at {pc}"));
    let mut reachable = std::collections::BTreeSet::new();
    let mut todo = vec![entry];
    while let Some(pc) = todo.pop() {
        if !reachable.insert(pc) {
            continue;
        }
        let i = *prog.get(pc).ok_or_else(|| bad("runs off the end", pc))?;
        match i.code {
            BPF_LD_W_ABS if i.k == OFF_NR || i.k == OFF_ARCH => return Err(bad("reloads nr/arch", pc)),
            BPF_LD_W_ABS | BPF_ALU_AND_K => todo.push(pc + 1),
            BPF_RET_K => {}
            BPF_JA => todo.push(pc + 1 + i.k as usize),
            BPF_JEQ_K | BPF_JGT_K | BPF_JGE_K | BPF_JSET_K => {
                todo.push(pc + 1 + usize::from(i.jt));
                todo.push(pc + 1 + usize::from(i.jf));
            }
            _ => return Err(bad("instruction", pc)),
        }
    }
    let last = *reachable.last().expect("entry");
    Ok((entry..=last).map(|pc| if reachable.contains(&pc) { prog[pc] } else { stmt(BPF_RET_K, default) }).collect())
}

/// Emits a binary search over `intervals` (sorted, contiguous `(first nr, outcome)`), the syscall number in A.
fn emit(intervals: &[(u32, Outcome)], blocks: &std::collections::HashMap<usize, Vec<Insn>>, out: &mut Vec<Insn>) {
    if let [(_, outcome)] = intervals {
        match outcome {
            Outcome::Ret(k) => out.push(stmt(BPF_RET_K, *k)),
            Outcome::Args(entry) => out.extend_from_slice(&blocks[entry]),
        }
        return;
    }
    let (left, right) = intervals.split_at(intervals.len() / 2);
    let mut l = Vec::new();
    emit(left, blocks, &mut l);
    // nr >= first of right: the JA jumps over the left half; else skip the JA.
    out.push(Insn { code: BPF_JGE_K, jt: 0, jf: 1, k: right[0].0 });
    out.push(stmt(BPF_JA, l.len() as u32));
    out.extend(l);
    emit(right, blocks, out);
}

/// Re-lays `prog` out as an architecture check and a binary search over syscall numbers (see the module docs).
pub(crate) fn optimize(prog: &[Insn]) -> io::Result<Vec<Insn>> {
    let bad = |what: String| io::Error::new(io::ErrorKind::InvalidData, what);
    let foreign = run(prog, &Data { nr: 0, arch: 0, args: [0; 6] })?;
    if foreign != libc::SECCOMP_RET_KILL_PROCESS {
        return Err(bad(format!("a foreign architecture gets {foreign:#x}, not KILL_PROCESS")));
    }
    let tail = outcome(prog, NR_SPAN)?;
    for nr in [NR_SPAN + 1, 0x4000_0000, 0x4000_0001, u32::MAX] {
        if outcome(prog, nr)? != tail {
            return Err(bad(format!("syscall {nr} is treated unlike {NR_SPAN}")));
        }
    }
    let Outcome::Ret(default) = tail else { return Err(bad("high syscall numbers check arguments".into())) };
    let mut intervals: Vec<(u32, Outcome)> = Vec::new();
    let mut blocks = std::collections::HashMap::new();
    for nr in 0..=NR_SPAN {
        let o = outcome(prog, nr)?;
        if let Outcome::Args(entry) = o {
            if blocks.contains_key(&entry) {
                return Err(bad(format!("argument checks at {entry} shared by two syscalls")));
            }
            blocks.insert(entry, args_block(prog, entry, default)?);
        }
        if intervals.last().is_none_or(|(_, last)| *last != o) {
            intervals.push((nr, o));
        }
    }
    let mut out = vec![
        stmt(BPF_LD_W_ABS, OFF_ARCH),
        Insn { code: BPF_JEQ_K, jt: 1, jf: 0, k: AUDIT_ARCH },
        stmt(BPF_RET_K, libc::SECCOMP_RET_KILL_PROCESS),
        stmt(BPF_LD_W_ABS, OFF_NR),
    ];
    emit(&intervals, &blocks, &mut out);
    if out.len() >= 4096 {
        return Err(bad(format!("optimized filter too long ({})", out.len())));
    }
    Ok(out)
}

/// One BPF instruction as the kernel's `struct sock_filter` (8 bytes) in native byte order, as lowercase hex.
fn encode(program: &[Insn]) -> String {
    let mut hex = String::with_capacity(program.len() * 16);
    for ins in program {
        let mut bytes = [0u8; 8];
        bytes[0..2].copy_from_slice(&ins.code.to_ne_bytes());
        bytes[2] = ins.jt;
        bytes[3] = ins.jf;
        bytes[4..8].copy_from_slice(&ins.k.to_ne_bytes());
        for b in bytes {
            hex.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
            hex.push(char::from(b"0123456789abcdef"[usize::from(b & 15)]));
        }
    }
    hex
}

/// Decodes [`encode`]'s output into `struct sock_filter`s.
pub(crate) fn decode(hex: &str) -> io::Result<Vec<libc::sock_filter>> {
    let bad = || io::Error::new(io::ErrorKind::InvalidData, "malformed BPF program");
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Ok(c - b'0'),
        b'a'..=b'f' => Ok(c - b'a' + 10),
        _ => Err(bad()),
    };
    let hex = hex.as_bytes();
    if !hex.len().is_multiple_of(16) || hex.is_empty() {
        return Err(bad());
    }
    let mut out = Vec::with_capacity(hex.len() / 16);
    for chunk in hex.chunks_exact(16) {
        let mut b = [0u8; 8];
        for (i, byte) in b.iter_mut().enumerate() {
            *byte = nibble(chunk[2 * i])? << 4 | nibble(chunk[2 * i + 1])?;
        }
        out.push(libc::sock_filter {
            code: u16::from_ne_bytes([b[0], b[1]]),
            jt: b[2],
            jf: b[3],
            k: u32::from_ne_bytes([b[4], b[5], b[6], b[7]]),
        });
    }
    Ok(out)
}

/// The policy of this architecture compiled (once per process): the BPF programs (encoded), in installation order.
pub(crate) fn compiled() -> io::Result<Vec<String>> {
    static COMPILED: std::sync::OnceLock<Result<Vec<String>, String>> = std::sync::OnceLock::new();
    COMPILED.get_or_init(|| compile().map_err(|e| e.to_string())).clone().map_err(io::Error::other)
}

/// Compiles the policy of this architecture: the BPF programs (encoded), in installation order.
pub(crate) fn compile() -> io::Result<Vec<String>> {
    #[cfg(not(target_arch = "x86_64"))]
    {
        return Err(io::Error::new(io::ErrorKind::Unsupported, "no seccomp policy for this architecture"));
    }
    #[cfg(target_arch = "x86_64")]
    {
        let policy: Policy = serde_json::from_str(POLICY).map_err(io::Error::other)?;
        let filters = serde_json::to_vec(&policy.filters).map_err(io::Error::other)?;
        let mut programs = seccompiler::compile_from_json(filters.as_slice(), ARCH).map_err(io::Error::other)?;
        policy
            .install
            .iter()
            .map(|name| {
                let prog = programs
                    .remove(name)
                    .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("no seccomp filter {name:?}")))?;
                let prog: Vec<Insn> = prog.iter().map(Insn::from).collect();
                Ok(encode(&optimize(&prog)?))
            })
            .collect()
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use super::*;

    fn policy() -> Policy {
        serde_json::from_str(POLICY).unwrap()
    }

    /// Syscall name → whether each of its rules in the `allow` filter is unconditional.
    fn allow_rules() -> BTreeMap<String, Vec<bool>> {
        let mut rules: BTreeMap<String, Vec<bool>> = BTreeMap::new();
        for rule in policy().filters["allow"]["filter"].as_array().unwrap() {
            let name = rule["syscall"].as_str().unwrap().to_string();
            rules.entry(name).or_default().push(rule.get("args").is_none());
        }
        rules
    }

    #[test]
    fn compiles() {
        let programs = compile().unwrap();
        assert_eq!(programs.len(), 4);
        for p in &programs {
            let decoded = decode(p).unwrap();
            assert!(decoded.len() < 4096, "BPF_MAXINSNS");
            assert_eq!(p.len(), decoded.len() * 16);
        }
    }

    #[test]
    fn refused_are_not_allowed_and_exist() {
        let p = policy();
        let allowed = allow_rules();
        let mut all_refused = BTreeSet::new();
        for group in &p.refused {
            for name in &group.syscalls {
                assert!(!allowed.contains_key(name), "{name} is both allowed and refused ({})", group.why);
                assert!(all_refused.insert(name.clone()), "{name} listed twice");
            }
        }
        // Every name must be a syscall of the architecture: compile them into a throwaway filter.
        let names: Vec<serde_json::Value> = all_refused.iter().map(|n| serde_json::json!({ "syscall": n })).collect();
        let check = serde_json::json!({ "x": { "mismatch_action": "allow", "match_action": { "errno": 1 }, "filter": names } });
        seccompiler::compile_from_json(serde_json::to_vec(&check).unwrap().as_slice(), ARCH).unwrap();
        // What the security goals name explicitly.
        for name in [
            "mount", "umount2", "pivot_root", "chroot", "ptrace", "process_vm_readv", "process_vm_writev", "kexec_load",
            "kexec_file_load", "init_module", "finit_module", "delete_module", "bpf", "perf_event_open", "keyctl", "add_key",
            "request_key", "reboot", "swapon", "swapoff", "unshare", "setns", "open_by_handle_at", "name_to_handle_at",
            "userfaultfd", "iopl", "ioperm", "acct", "settimeofday", "clock_settime", "clock_adjtime", "adjtimex", "quotactl",
            "lookup_dcookie", "fanotify_init", "syslog", "vhangup", "clone3",
        ] {
            assert!(all_refused.contains(name), "{name} is not in the refused list");
        }
    }

    #[test]
    fn conditional_rules_are_never_unconditional() {
        // seccompiler drops an unconditional rule of a syscall that also has conditional ones: forbid mixing.
        for (name, rules) in allow_rules() {
            assert!(rules.len() == 1 || rules.iter().all(|u| !u), "{name} mixes conditional and unconditional rules");
        }
        let rules = allow_rules();
        for name in ["clone", "personality", "mknod", "mknodat"] {
            assert!(rules[name].iter().all(|u| !u), "{name} must be conditional");
        }
    }

    /// Every (name → program) of the policy, as seccompiler compiles it.
    fn seccompiler_programs() -> Vec<(String, Vec<Insn>)> {
        let p = policy();
        let filters = serde_json::to_vec(&p.filters).unwrap();
        let mut programs = seccompiler::compile_from_json(filters.as_slice(), ARCH).unwrap();
        p.install.iter().map(|n| (n.clone(), programs.remove(n).unwrap().iter().map(Insn::from).collect())).collect()
    }

    #[test]
    fn optimized_programs_agree_with_seccompiler() {
        for (name, original) in seccompiler_programs() {
            let optimized = optimize(&original).unwrap();
            eprintln!("{name}: {} instructions, {} optimized", original.len(), optimized.len());
            // Argument values worth trying: every constant of the program, with neighbours and single bits.
            let mut values: BTreeSet<u64> = [0, 1, u64::from(u32::MAX), u64::MAX, 0x7e02_0000].into_iter().collect();
            for i in &original {
                for v in [i.k, i.k.wrapping_add(1), i.k.wrapping_sub(1)] {
                    values.insert(u64::from(v));
                    values.insert(u64::from(v) | 1 << 40);
                }
            }
            for bit in 0..64 {
                values.insert(1 << bit);
            }
            let mut nrs: Vec<u32> = (0..=NR_SPAN + 8).collect();
            nrs.extend([0x4000_0000, 0x4000_0038, 0x4000_0000 + 165, u32::MAX]);
            for arch in [AUDIT_ARCH, 0x4000_0003 /* i386 */, 0] {
                for &nr in &nrs {
                    let base = Data { nr, arch, args: [0; 6] };
                    let want = run(&original, &base).unwrap();
                    assert_eq!(run(&optimized, &base).unwrap(), want, "{name}: nr {nr} arch {arch:#x}");
                    if matches!(outcome(&original, nr), Ok(Outcome::Args(_))) && arch == AUDIT_ARCH {
                        for arg in 0..6 {
                            for &v in &values {
                                let mut d = Data { nr, arch, args: [0; 6] };
                                d.args[arg] = v;
                                assert_eq!(run(&optimized, &d).unwrap(), run(&original, &d).unwrap(), "{name}: nr {nr} arg{arg}={v:#x}");
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn policy_decisions() {
        let programs: Vec<Vec<Insn>> = compile().unwrap().iter().map(|h| {
            decode(h).unwrap().iter().map(|i| Insn { code: i.code, jt: i.jt, jf: i.jf, k: i.k }).collect()
        }).collect();
        // The kernel: the most restrictive action wins; among equal ones, the newest filter's data.
        let verdict = |nr: i64, args: [u64; 6]| -> u32 {
            let d = Data { nr: nr as u32, arch: AUDIT_ARCH, args };
            let mut best = libc::SECCOMP_RET_ALLOW;
            for p in programs.iter().rev() {
                let r = run(p, &d).unwrap();
                if ((r & 0xffff_0000) as i32) < ((best & 0xffff_0000) as i32) {
                    best = r;
                }
            }
            best
        };
        let eperm = libc::SECCOMP_RET_ERRNO | libc::EPERM as u32;
        let allow = libc::SECCOMP_RET_ALLOW;
        assert_eq!(verdict(libc::SYS_read, [0; 6]), allow);
        assert_eq!(verdict(libc::SYS_mount, [0; 6]), eperm);
        assert_eq!(verdict(libc::SYS_ptrace, [0; 6]), eperm);
        assert_eq!(verdict(libc::SYS_unshare, [0; 6]), eperm);
        assert_eq!(verdict(libc::SYS_clone3, [0; 6]), libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32);
        // clone: threads and fork yes, namespaces no.
        let thread = (libc::CLONE_VM | libc::CLONE_FS | libc::CLONE_FILES | libc::CLONE_SIGHAND | libc::CLONE_THREAD) as u64;
        assert_eq!(verdict(libc::SYS_clone, [thread, 0, 0, 0, 0, 0]), allow);
        assert_eq!(verdict(libc::SYS_clone, [libc::SIGCHLD as u64, 0, 0, 0, 0, 0]), allow);
        for ns in [libc::CLONE_NEWUSER, libc::CLONE_NEWNS, libc::CLONE_NEWNET, libc::CLONE_NEWPID, libc::CLONE_NEWCGROUP] {
            assert_eq!(verdict(libc::SYS_clone, [ns as u64 | libc::SIGCHLD as u64, 0, 0, 0, 0, 0]), eperm);
        }
        assert_eq!(verdict(libc::SYS_personality, [0, 0, 0, 0, 0, 0]), allow);
        assert_eq!(verdict(libc::SYS_personality, [0xffff_ffff, 0, 0, 0, 0, 0]), allow);
        assert_eq!(verdict(libc::SYS_personality, [0x0040_0000 /* READ_IMPLIES_EXEC */, 0, 0, 0, 0, 0]), eperm);
        assert_eq!(verdict(libc::SYS_mknodat, [0, 0, u64::from(libc::S_IFIFO | 0o644), 0, 0, 0]), allow);
        assert_eq!(verdict(libc::SYS_mknodat, [0, 0, u64::from(libc::S_IFCHR | 0o644), 0, 0, 0]), eperm);
        assert_eq!(verdict(libc::SYS_mknod, [0, u64::from(libc::S_IFBLK | 0o644), 0, 0, 0, 0]), eperm);
        // Socket families: those a runtime needs; any other is unknown to this kernel, as it were.
        let eafnosupport = libc::SECCOMP_RET_ERRNO | libc::EAFNOSUPPORT as u32;
        let eprotonosupport = libc::SECCOMP_RET_ERRNO | libc::EPROTONOSUPPORT as u32;
        let stream = libc::SOCK_STREAM as u64 | libc::SOCK_CLOEXEC as u64;
        for family in [libc::AF_UNIX, libc::AF_INET, libc::AF_INET6] {
            assert_eq!(verdict(libc::SYS_socket, [family as u64, stream, 0, 0, 0, 0]), allow, "family {family}");
            assert_eq!(verdict(libc::SYS_socketpair, [family as u64, stream, 0, 0, 0, 0]), allow, "family {family}");
        }
        let netlink = libc::AF_NETLINK as u64;
        assert_eq!(verdict(libc::SYS_socket, [netlink, libc::SOCK_RAW as u64, libc::NETLINK_ROUTE as u64, 0, 0, 0]), allow);
        for protocol in [libc::NETLINK_KOBJECT_UEVENT, libc::NETLINK_AUDIT, libc::NETLINK_SOCK_DIAG, libc::NETLINK_GENERIC] {
            assert_eq!(verdict(libc::SYS_socket, [netlink, libc::SOCK_RAW as u64, protocol as u64, 0, 0, 0]), eprotonosupport);
        }
        // Every other family the kernel knows (AF_MAX is 46), and beyond; the upper half of the argument is ignored,
        // as the kernel ignores it (an int).
        for family in (0..64).filter(|f| ![libc::AF_UNIX, libc::AF_INET, libc::AF_INET6, libc::AF_NETLINK].contains(f)) {
            for args in [[family as u64, stream, 0, 0, 0, 0], [family as u64 | 1 << 32, 0, 0, 0, 0, 0]] {
                assert_eq!(verdict(libc::SYS_socket, args), eafnosupport, "socket family {family}");
                assert_eq!(verdict(libc::SYS_socketpair, args), eafnosupport, "socketpair family {family}");
            }
        }
        assert_eq!(verdict(libc::SYS_socket, [libc::AF_INET as u64 | 1 << 32, stream, 0, 0, 0, 0]), allow);
        assert_eq!(verdict(libc::SYS_socket, [u64::from(u32::MAX), stream, 0, 0, 0, 0]), eafnosupport);
        // A foreign architecture is killed; x32 syscall numbers are refused.
        let d = Data { nr: 0, arch: 0x4000_0003, args: [0; 6] };
        assert_eq!(run(&programs[0], &d).unwrap(), libc::SECCOMP_RET_KILL_PROCESS);
        assert_eq!(verdict(0x4000_0000, [0; 6]), eperm);
    }

    #[test]
    fn round_trip() {
        let prog = vec![Insn { code: 0x15, jt: 1, jf: 2, k: 0xdeadbeef }];
        let d = decode(&encode(&prog)).unwrap();
        assert_eq!((d[0].code, d[0].jt, d[0].jf, d[0].k), (0x15, 1, 2, 0xdeadbeef));
        assert!(decode("abc").is_err());
    }
}
