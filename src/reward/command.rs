//! `--reward-cmd "python3 my_reward.py"`: a reward computed by the user's own program
//! (docs/writing-a-reward.md, "A reward from any program").
//!
//! The program is started once (through `sh -c`) and answers batches until its standard input
//! closes. Protocol, one batch:
//!
//! ```text
//! flowsteer → program (stdin):   "<t> <nbytes>\n" then nbytes of a .npy, float32 [B, D]
//! program → flowsteer (stdout):  "<nbytes>\n"     then nbytes of a .npy, float32 [B]
//! ```
//! `t` is the time of the points (1 for final samples; intermediate points are x̂1 or x_t as
//! `--reward-on` says). The program must flush stdout after each answer and write nothing else
//! there (its stderr is free for logs and is shown when it fails). A program that exits, does not
//! answer within the timeout, or answers a malformed or wrong-shaped array ends the run with
//! that reason and the tail of its stderr.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::CommandExt;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// How much of the program's stderr is kept for error messages.
const STDERR_TAIL: usize = 8192;

/// A running reward program.
pub struct RewardCommand {
    pub command: String,
    pub timeout: Duration,
    inner: Mutex<Option<Running>>,
    stderr: Arc<Mutex<Vec<u8>>>,
    /// Seconds spent waiting for the program, and batches sent (for the summary).
    stats: Mutex<(f64, u64)>,
    /// Seconds a device backend spent copying batches to the host and rewards back.
    copy_seconds: Mutex<f64>,
}

struct Running {
    child: Child,
    stdin: ChildStdin,
    /// Answers (or the reason there is none) from the thread reading stdout.
    answers: mpsc::Receiver<Result<Vec<u8>, String>>,
    /// Asks the reader thread for one more answer.
    ask: mpsc::Sender<()>,
}

impl std::fmt::Debug for RewardCommand {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RewardCommand({:?})", self.command)
    }
}

impl PartialEq for RewardCommand {
    fn eq(&self, other: &Self) -> bool {
        self.command == other.command
    }
}

impl serde::Serialize for RewardCommand {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("RewardCommand", 2)?;
        st.serialize_field("command", &self.command)?;
        st.serialize_field("timeout_seconds", &self.timeout.as_secs_f64())?;
        st.end()
    }
}

/// Reads one framed answer: a decimal byte count line, then that many bytes.
fn read_frame(out: &mut BufReader<std::process::ChildStdout>) -> Result<Vec<u8>, String> {
    let mut line = String::new();
    match out.read_line(&mut line) {
        Ok(0) => return Err("the program closed its standard output (did it exit?)".into()),
        Ok(_) => {}
        Err(e) => return Err(format!("reading the program's answer: {e}")),
    }
    let n: usize = line.trim().parse().map_err(|_| {
        format!("the answer must start with a line holding its byte count, e.g. \"128\\n\", but the program wrote {:?}", line.chars().take(80).collect::<String>())
    })?;
    if n > 1 << 30 {
        return Err(format!("the answer announces {n} bytes; that is not a [B] float32 array"));
    }
    let mut buf = vec![0u8; n];
    out.read_exact(&mut buf).map_err(|e| format!("the program announced {n} bytes but stopped sending ({e})"))?;
    Ok(buf)
}

impl RewardCommand {
    /// Starts `command` (through `sh -c`); `timeout` bounds each answer.
    pub fn start(command: &str, timeout: Duration) -> anyhow::Result<Self> {
        let this = Self { command: command.to_string(), timeout, inner: Mutex::new(None), stderr: Arc::default(), stats: Mutex::new((0.0, 0)), copy_seconds: Mutex::new(0.0) };
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(command)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group, so that stopping it stops what `sh` started too.
            .process_group(0)
            .spawn()
            .with_context(|| format!("starting --reward-cmd {command:?}"))?;
        let stdin = child.stdin.take().expect("piped");
        let mut stdout = BufReader::new(child.stdout.take().expect("piped"));
        let mut stderr = child.stderr.take().expect("piped");
        let tail = this.stderr.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stderr.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let mut t = tail.lock().unwrap_or_else(|e| e.into_inner());
                t.extend_from_slice(&buf[..n]);
                if t.len() > STDERR_TAIL {
                    let cut = t.len() - STDERR_TAIL;
                    t.drain(..cut);
                }
            }
        });
        let (ask, asked) = mpsc::channel::<()>();
        let (send, answers) = mpsc::channel();
        std::thread::spawn(move || {
            while asked.recv().is_ok() {
                let frame = read_frame(&mut stdout);
                let failed = frame.is_err();
                if send.send(frame).is_err() || failed {
                    break;
                }
            }
        });
        *this.inner.lock().unwrap() = Some(Running { child, stdin, answers, ask });
        Ok(this)
    }

    /// The program's stderr so far (its last few KiB), for error messages.
    fn stderr_tail(&self) -> String {
        // Give the stderr reader a moment to collect what a dying program wrote last.
        std::thread::sleep(Duration::from_millis(100));
        let t = self.stderr.lock().unwrap_or_else(|e| e.into_inner());
        let text = String::from_utf8_lossy(&t).trim_end().to_string();
        if text.is_empty() {
            "(the program wrote nothing to stderr)".into()
        } else {
            format!("its stderr:\n{text}")
        }
    }

    /// Seconds spent in the program (sending, waiting, reading) and batches sent so far.
    pub fn time_spent(&self) -> (f64, u64) {
        *self.stats.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds `seconds` of copies between a device and the host made for the program.
    pub fn add_copy_time(&self, seconds: f64) {
        *self.copy_seconds.lock().unwrap_or_else(|e| e.into_inner()) += seconds;
    }

    /// Seconds spent copying batches from a device and rewards back (0 on the CPU backend).
    pub fn copy_time(&self) -> f64 {
        *self.copy_seconds.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Rewards of `rows` (`[B, dim]` row-major) at time `t`, `[B]`.
    pub fn eval(&self, rows: &[f32], dim: usize, t: f32) -> anyhow::Result<Vec<f32>> {
        let start = Instant::now();
        let b = rows.len() / dim;
        let mut guard = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let Some(run) = guard.as_mut() else { bail!("--reward-cmd {:?} failed earlier in this run", self.command) };
        let result = Self::exchange(run, rows, dim, b, t, self.timeout);
        let out = match result {
            Ok(v) => v,
            Err(why) => {
                let mut run = guard.take().expect("running");
                stop(&mut run.child);
                let status = run.child.wait().map(|s| s.to_string()).unwrap_or_default();
                bail!("--reward-cmd {:?}: {why} (program status: {status}); {}", self.command, self.stderr_tail());
            }
        };
        let mut s = self.stats.lock().unwrap_or_else(|e| e.into_inner());
        s.0 += start.elapsed().as_secs_f64();
        s.1 += 1;
        Ok(out)
    }

    fn exchange(run: &mut Running, rows: &[f32], dim: usize, b: usize, t: f32, timeout: Duration) -> Result<Vec<f32>, String> {
        let npy = crate::npy::to_bytes(&[b, dim], rows);
        let header = format!("{t:e} {}\n", npy.len());
        run.stdin
            .write_all(header.as_bytes())
            .and_then(|_| run.stdin.write_all(&npy))
            .and_then(|_| run.stdin.flush())
            .map_err(|e| format!("sending a batch failed ({e}): the program has exited"))?;
        run.ask.send(()).map_err(|_| "the program's output was closed earlier".to_string())?;
        let frame = match run.answers.recv_timeout(timeout) {
            Ok(f) => f?,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                return Err(format!("no answer within --reward-timeout {} s for a batch of {b} points", timeout.as_secs_f64()))
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => return Err("the program's output closed".into()),
        };
        let arr = crate::npy::parse_f32(&frame, "the program's answer").map_err(|e| format!("the answer is not a float32 .npy: {e}"))?;
        if arr.shape != [b] {
            return Err(format!("the answer has shape {:?} but must be [{b}] (one float32 reward per point of the [{b}, {dim}] batch)", arr.shape));
        }
        Ok(arr.data)
    }
}

impl Drop for RewardCommand {
    fn drop(&mut self) {
        if let Some(mut run) = self.inner.get_mut().ok().and_then(Option::take) {
            // Closing stdin asks the program to finish; a program that ignores it is stopped.
            drop(run.stdin);
            let deadline = Instant::now() + Duration::from_secs(2);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = run.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            stop(&mut run.child);
            let _ = run.child.wait();
        }
    }
}

/// Kills the program's whole process group: killing `sh` alone would leave the program it
/// started running (and, if it spins, using a core) after flowsteer has exited.
fn stop(child: &mut Child) {
    // SAFETY: kill(2) with a negative pid signals a process group; no memory is involved.
    let group_killed = unsafe { libc::kill(-(child.id() as libc::pid_t), libc::SIGKILL) } == 0;
    if !group_killed {
        let _ = child.kill();
    }
}
