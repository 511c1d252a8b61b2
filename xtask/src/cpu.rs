//! CPU time of processes from `/proc`: the bench's server, and the load generators this
//! process ran and waited for.

/// Linux reports process times in ticks of 1/100 s (`USER_HZ`).
const TICKS_PER_SECOND: f64 = 100.0;

/// utime, stime, cutime and cstime of a `/proc/PID/stat` line, in seconds.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct CpuTimes {
    pub(crate) user: f64,
    pub(crate) system: f64,
    /// Of the children that were waited for.
    pub(crate) children_user: f64,
    pub(crate) children_system: f64,
}

impl CpuTimes {
    /// From the text of `/proc/PID/stat`: fields 14 to 17, counted after the command
    /// name, which may itself hold spaces and parentheses.
    pub(crate) fn parse(stat: &str) -> Option<Self> {
        let after = stat.rsplit_once(')')?.1;
        let f: Vec<&str> = after.split_whitespace().collect();
        let secs =
            |i: usize| -> Option<f64> { Some(f.get(i)?.parse::<f64>().ok()? / TICKS_PER_SECOND) };
        Some(Self {
            user: secs(11)?,
            system: secs(12)?,
            children_user: secs(13)?,
            children_system: secs(14)?,
        })
    }

    pub(crate) fn of(pid: &str) -> Option<Self> {
        Self::parse(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
    }

    pub(crate) fn own(&self) -> f64 {
        self.user + self.system
    }

    pub(crate) fn children(&self) -> f64 {
        self.children_user + self.children_system
    }
}

/// CPU seconds the whole machine has been busy since boot, summed over its cores: every
/// process, the kernel's interrupts and the time stolen by the hypervisor (`/proc/stat`).
pub(crate) fn machine_busy() -> Option<f64> {
    busy_of(&std::fs::read_to_string("/proc/stat").ok()?)
}

/// The busy seconds of `/proc/stat`'s first line: user, nice, system, irq, softirq and
/// steal (not idle, not iowait).
fn busy_of(stat: &str) -> Option<f64> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let f: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .map(|x| x.parse().ok())
        .collect::<Option<_>>()?;
    let busy = [0, 1, 2, 5, 6, 7]
        .iter()
        .map(|&i| f.get(i).copied().unwrap_or(0.0));
    Some(busy.sum::<f64>() / TICKS_PER_SECOND)
}

/// The cores this process may run on.
pub(crate) fn cores() -> u32 {
    std::thread::available_parallelism().map_or(1, |n| n.get() as u32)
}

/// CPU seconds of this process's children that have exited and been waited for.
pub(crate) fn children_cpu() -> f64 {
    CpuTimes::of("self").map_or(0.0, |t| t.children())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_times_come_from_proc_stat() {
        let stat =
            "4242 (a (b) c) S 1 2 3 0 -1 4194304 10 0 0 0 250 50 700 300 20 0 1 0 100 1000 100";
        let t = CpuTimes::parse(stat).unwrap();
        assert_eq!(
            t,
            CpuTimes {
                user: 2.5,
                system: 0.5,
                children_user: 7.0,
                children_system: 3.0
            }
        );
        assert!((t.own() - 3.0).abs() < 1e-9 && (t.children() - 10.0).abs() < 1e-9);
        assert!(CpuTimes::parse("4242 (x) S 1 2").is_none());
        assert!(CpuTimes::of("self").is_some());
    }

    #[test]
    fn machine_busy_counts_all_but_idle_and_iowait() {
        let stat = "cpu  100 10 50 900 40 5 15 20 0 0\ncpu0 50 5 25 450 20 2 7 10 0 0\n";
        assert_eq!(busy_of(stat), Some(2.0));
        assert!(busy_of("intr 1 2 3").is_none());
        assert!(machine_busy().is_some_and(|b| b > 0.0));
    }
}
