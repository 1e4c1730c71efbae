//! Sizes that a file or a command line decides, checked before memory is reserved for them.
//!
//! A model may declare an input dimension of 2^40, a `--dim` may ask for one, a norm's hidden size may be
//! declared (or inferred from a shape constant) as 2^40, a test-data file may claim 2^40 elements. Allocating
//! what such a size asks for ends the process with `memory allocation of … bytes failed` and an abort — or,
//! below what the kernel refuses outright, with the kernel's OOM killer. So every buffer whose length comes from
//! such a size is first checked here: the element count and the byte count in checked arithmetic, then the
//! bytes against a **budget**; over it, one typed error that names the value, where its size came from and what
//! it would need.
//!
//! The budget is [`BUDGET_VAR`] when set (`8G`, `512M`, `1.5GiB`, a number of bytes), else a quarter of the
//! machine's memory (the smaller of its physical memory and its cgroup's limit). A quarter, because what is
//! checked here is only what normshift itself builds — generated inputs, test data, constants a pass creates —
//! and running a model needs several times its inputs again for the runtime's own tensors, two models' outputs
//! are held side by side to compare them, and the machine has other work. The budget bounds the sizes no
//! machine could hold; it does not promise that a model within it fits.

use std::fmt;

/// The environment variable that sets the budget.
pub const BUDGET_VAR: &str = "NORMSHIFT_MEMORY_BUDGET";

/// The share of the machine's memory the budget is by default: one part in this many.
const MACHINE_SHARE: u64 = 4;

/// The budget when the machine's memory cannot be read.
const FALLBACK_BYTES: u64 = 4 << 30;

/// What normshift may reserve for data whose size a file or a command line decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    pub bytes: u64,
    pub source: BudgetSource,
}

/// Where the budget came from, for messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BudgetSource {
    /// [`BUDGET_VAR`] set it.
    Variable,
    /// A quarter of this much memory, the machine's (or its cgroup's).
    Machine { memory: u64 },
    /// The machine's memory could not be read: [`FALLBACK_BYTES`].
    Fallback,
}

impl fmt::Display for Budget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bytes = Size(self.bytes.into());
        match self.source {
            BudgetSource::Variable => write!(f, "the {bytes} memory budget ({BUDGET_VAR})"),
            BudgetSource::Machine { memory } => write!(
                f,
                "the {bytes} memory budget (a quarter of this machine's {}; {BUDGET_VAR} sets another)",
                Size(memory.into())
            ),
            BudgetSource::Fallback => write!(
                f,
                "the {bytes} memory budget (this machine's memory is unknown; {BUDGET_VAR} sets another)"
            ),
        }
    }
}

/// A size in bytes as people read it: `812 bytes`, `64 KiB`, `5.9 GiB`, `4 TiB`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size(pub u128);

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [&str; 7] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB", "ZiB"];
        if self.0 < 1024 {
            return write!(f, "{} bytes", self.0);
        }
        let mut value = self.0 as f64 / 1024.0;
        let mut unit = 0;
        while value >= 1024.0 && unit + 1 < UNITS.len() {
            value /= 1024.0;
            unit += 1;
        }
        if value.fract() == 0.0 || value >= 100.0 {
            write!(f, "{value:.0} {}", UNITS[unit])
        } else {
            write!(f, "{value:.1} {}", UNITS[unit])
        }
    }
}

/// A size too large for the budget, or a budget that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    /// `what` names the value and where its size came from; `bytes` is what it would need (`None`: more than
    /// 2^128 bytes), `already` what was reserved for its kind before it.
    #[error("{what}: {}{}, over {budget}{}",
        bytes.map_or("more than 2^128 bytes".to_string(), |b| Size(b).to_string()),
        of.map(|t| format!(" of {t}")).unwrap_or_default(),
        already_text(*already))]
    OverBudget {
        what: String,
        bytes: Option<u128>,
        of: Option<&'static str>,
        already: u64,
        budget: Budget,
    },
    #[error(
        "{BUDGET_VAR} is `{0}`, which is not a size: give bytes, or a number with K, M, G or T (8G, 512M, 1.5GiB)"
    )]
    BadVariable(String),
}

fn already_text(already: u64) -> String {
    if already == 0 {
        String::new()
    } else {
        format!(" with {} reserved before it", Size(already.into()))
    }
}

/// The budget now: [`BUDGET_VAR`] if set, else a quarter of the machine's memory.
pub fn budget() -> Result<Budget, LimitError> {
    if let Some(text) = std::env::var_os(BUDGET_VAR) {
        let text = text.to_string_lossy().into_owned();
        return parse_size(&text)
            .map(|bytes| Budget {
                bytes,
                source: BudgetSource::Variable,
            })
            .ok_or(LimitError::BadVariable(text));
    }
    Ok(match machine_memory() {
        Some(memory) => Budget {
            bytes: memory / MACHINE_SHARE,
            source: BudgetSource::Machine { memory },
        },
        None => Budget {
            bytes: FALLBACK_BYTES,
            source: BudgetSource::Fallback,
        },
    })
}

/// `8G`, `512M`, `1.5GiB`, `100000`: K, M, G, T (with or without `iB`) are powers of 1024, KB, MB, GB, TB powers
/// of 1000.
pub fn parse_size(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let scale: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kib" => 1024.0,
        "m" | "mib" => 1024f64.powi(2),
        "g" | "gib" => 1024f64.powi(3),
        "t" | "tib" => 1024f64.powi(4),
        "kb" => 1e3,
        "mb" => 1e6,
        "gb" => 1e9,
        "tb" => 1e12,
        _ => return None,
    };
    let bytes = number * scale;
    // `as` saturates; anything past u64 is no budget a machine has.
    (bytes.is_finite() && bytes < u64::MAX as f64).then_some(bytes as u64)
}

/// The machine's memory: its physical memory, or its cgroup's limit when that is smaller.
fn machine_memory() -> Option<u64> {
    // SAFETY: sysconf only reads system configuration.
    let (pages, page) = unsafe {
        (
            libc::sysconf(libc::_SC_PHYS_PAGES),
            libc::sysconf(libc::_SC_PAGESIZE),
        )
    };
    let physical = u64::try_from(pages)
        .ok()
        .zip(u64::try_from(page).ok())
        .and_then(|(n, size)| n.checked_mul(size))
        .filter(|&b| b > 0)?;
    Some(cgroup_limit().map_or(physical, |limit| limit.min(physical)))
}

/// The memory limit of this process's cgroup, v2 or v1, when it sets one.
fn cgroup_limit() -> Option<u64> {
    [
        "/sys/fs/cgroup/memory.max",
        "/sys/fs/cgroup/memory/memory.limit_in_bytes",
    ]
    .iter()
    .find_map(|path| {
        std::fs::read_to_string(path)
            .ok()?
            .trim()
            .parse::<u64>()
            .ok()
    })
}

/// The product of `dims`, or `None` when it overflows.
pub fn product(dims: impl IntoIterator<Item = u64>) -> Option<u64> {
    dims.into_iter().try_fold(1u64, |a, d| a.checked_mul(d))
}

/// The bytes `count` elements of `elem_size` bytes take (`None` when the count overflowed).
pub fn bytes_of(count: Option<u64>, elem_size: u64) -> Option<u128> {
    count.map(|n| u128::from(n) * u128::from(elem_size))
}

/// Checks that `bytes` more fit in the budget when `already` bytes of the same kind are reserved; `what` is
/// asked for (the value, where its size came from) only when they do not.
pub fn check(
    bytes: Option<u128>,
    of: Option<&'static str>,
    already: u64,
    what: impl FnOnce() -> String,
) -> Result<(), LimitError> {
    let budget = budget()?;
    let fits = bytes.is_some_and(|b| {
        b.checked_add(already.into())
            .is_some_and(|total| total <= budget.bytes.into())
    });
    if fits {
        return Ok(());
    }
    Err(LimitError::OverBudget {
        what: what(),
        bytes,
        of,
        already,
        budget,
    })
}

/// Checks a buffer of `dims` elements of `elem_size` bytes each, as [`check`] does.
pub fn check_elements(
    dims: &[u64],
    elem_size: u64,
    of: Option<&'static str>,
    what: impl FnOnce() -> String,
) -> Result<(), LimitError> {
    check(
        bytes_of(product(dims.iter().copied()), elem_size),
        of,
        0,
        what,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(parse_size("8G"), Some(8 << 30));
        assert_eq!(parse_size("8 GiB"), Some(8 << 30));
        assert_eq!(parse_size("1.5g"), Some(3 << 29));
        assert_eq!(parse_size("512M"), Some(512 << 20));
        assert_eq!(parse_size("2GB"), Some(2_000_000_000));
        assert_eq!(parse_size("100000"), Some(100_000));
        assert_eq!(parse_size("0"), Some(0));
        for bad in ["", "eight", "8X", "-1G", "1e400", "99999999999T"] {
            assert_eq!(parse_size(bad), None, "{bad}");
        }
    }

    #[test]
    fn sizes_print_as_people_read_them() {
        assert_eq!(Size(812).to_string(), "812 bytes");
        assert_eq!(Size(1 << 42).to_string(), "4 TiB");
        assert_eq!(Size(6_335_000_000).to_string(), "5.9 GiB");
        assert_eq!(Size(1 << 70).to_string(), "1 ZiB");
        assert_eq!(Size(1 << 80).to_string(), "1024 ZiB");
    }

    #[test]
    fn products_that_overflow_are_none_not_wrapped() {
        assert_eq!(product([1 << 20, 1 << 20]), Some(1 << 40));
        assert_eq!(product([1 << 40, 1 << 40]), None);
        assert_eq!(
            product([0, 1 << 40, 1 << 40]),
            Some(0),
            "an empty tensor is empty"
        );
        assert_eq!(product([]), Some(1));
        assert_eq!(bytes_of(Some(u64::MAX), 8), Some(u128::from(u64::MAX) * 8));
    }

    #[test]
    fn an_over_budget_message_names_the_value_the_need_and_the_budget() {
        let budget = Budget {
            bytes: 6 << 30,
            source: BudgetSource::Machine { memory: 24 << 30 },
        };
        let e = LimitError::OverBudget {
            what: "input `x` of shape [1, 1099511627776] (declared by the file)".into(),
            bytes: Some(1 << 42),
            of: Some("float32"),
            already: 0,
            budget,
        };
        assert_eq!(
            e.to_string(),
            "input `x` of shape [1, 1099511627776] (declared by the file): 4 TiB of float32, over the 6 GiB \
             memory budget (a quarter of this machine's 24 GiB; NORMSHIFT_MEMORY_BUDGET sets another)"
        );
    }
}
