//! Keeping the disk off the loop: `sendfile` is only ever asked for bytes
//! whose pages are already in the page cache.
//!
//! `sendfile` reads the disk on the calling thread when a page is missing,
//! and on the one HTTP loop that stalls every client and `/healthz` (a cold
//! SD card during a new-release storm held it for seconds, long enough for
//! the watchdog to reset the provider). So a response walks its file in
//! windows of [`WINDOW`] bytes: a window is sent only once its pages are
//! known to be cached, either seen resident (`mincore`) or just read into
//! the cache by the read-ahead pool, which also reads the next window while
//! this one goes out.
//!
//! The pool is bounded: at most `jobs` windows are being read at once, all
//! connections together. A connection that needs a window read waits for a
//! place (only it waits; the loop goes on), and one with bytes still to send
//! does not queue its next window until a place is free, so the queue never
//! holds more than `jobs` reads, whatever the number of downloads.
//!
//! This module does not open files or decide what is served (`files`), nor
//! pace the socket (`pace`).

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Bytes read into the cache at a time, and how far ahead of `sendfile`
/// the pool reads: large enough for the disk to stream, small enough that a
/// window of a slow card arrives in well under a second.
pub const WINDOW: i64 = 512 * 1024;
/// Bytes one `read` on the pool asks for while it waits for a window.
const SCRATCH: usize = 64 * 1024;

/// The read-ahead pool's bound: places for windows being read. Clones
/// share the places.
#[derive(Clone)]
pub struct Warmer {
    places: Arc<Semaphore>,
}

impl Warmer {
    /// A pool reading at most `jobs` windows at once (the runtime's
    /// blocking threads, so a read never waits for a thread).
    pub fn new(jobs: usize) -> Self {
        Warmer {
            places: Arc::new(Semaphore::new(jobs.max(1))),
        }
    }

    /// Reads `[from, to)` of `file` into the cache on the blocking pool,
    /// holding `place` until it is done.
    fn spawn(place: OwnedSemaphorePermit, file: &Arc<File>, from: i64, to: i64) -> Reading {
        let file = file.clone();
        let job = tokio::task::spawn_blocking(move || {
            let _place = place;
            read_into_cache(&file, from, to)
        });
        Reading { job, to }
    }
}

/// A window being read on the pool.
struct Reading {
    job: JoinHandle<io::Result<()>>,
    to: i64,
}

/// One response's walk through its file: which bytes `sendfile` may send
/// without touching the disk, and the window being read ahead of them.
pub struct Ahead {
    file: Arc<File>,
    /// Bytes before this are known to be cached.
    ready: i64,
    end: i64,
    reading: Option<Reading>,
    /// `mincore` only reports the page cache for files this process owns or
    /// may write; elsewhere it reports nothing cached. Turned off for this
    /// file once it calls a window just read "not cached", so such files
    /// are read through the pool rather than checked for nothing.
    mincore: bool,
}

impl Ahead {
    /// A walk over bytes `[start, end)` of `file`.
    pub fn new(file: Arc<File>, start: i64, end: i64) -> Self {
        // The kernel's own readahead would start reads from inside
        // `sendfile`; the pool does all the reading instead.
        let _ = nix::fcntl::posix_fadvise(
            &file,
            start,
            end - start,
            nix::fcntl::PosixFadviseAdvice::POSIX_FADV_RANDOM,
        );
        Ahead {
            file,
            ready: start,
            end,
            reading: None,
            mincore: true,
        }
    }

    /// The end of the cached bytes from `offset` on (more than `offset`),
    /// waiting for the pool if none are; also starts reading the next
    /// window when a place is free. Returns how long it waited for the
    /// disk, which is not the client's time.
    pub async fn ready_from(
        &mut self,
        offset: i64,
        warmer: &Warmer,
    ) -> io::Result<(i64, Duration)> {
        let mut waited = Duration::ZERO;
        loop {
            if let Some(r) = &self.reading {
                if r.job.is_finished() || self.ready <= offset {
                    let began = Instant::now();
                    self.finish().await?;
                    waited += began.elapsed();
                }
            }
            if self.ready > offset {
                // Keep one window ahead: cached already, or read on the
                // pool when a place is free (never waited for here).
                if self.reading.is_none() && self.ready < self.end && self.ready - offset < WINDOW {
                    if self.window_cached() {
                        self.ready = self.window_end();
                    } else if let Ok(place) = warmer.places.clone().try_acquire_owned() {
                        self.read(place);
                    }
                }
                return Ok((self.ready, waited));
            }
            // Nothing cached to send: wait for a place, then for the read.
            if self.reading.is_none() {
                if self.window_cached() {
                    self.ready = self.window_end();
                    continue;
                }
                let began = Instant::now();
                let place = warmer
                    .places
                    .clone()
                    .acquire_owned()
                    .await
                    .map_err(|_| io::Error::other("read-ahead pool closed"))?;
                waited += began.elapsed();
                self.read(place);
            }
        }
    }

    fn window_end(&self) -> i64 {
        self.end.min(self.ready.saturating_add(WINDOW))
    }

    fn window_cached(&self) -> bool {
        self.mincore && cached(&self.file, self.ready, self.window_end())
    }

    /// Hands the next window to the pool, holding `place`.
    fn read(&mut self, place: OwnedSemaphorePermit) {
        let to = self.window_end();
        self.reading = Some(Warmer::spawn(place, &self.file, self.ready, to));
    }

    /// Waits for the window being read; its bytes are then cached.
    async fn finish(&mut self) -> io::Result<()> {
        let Some(r) = self.reading.take() else {
            return Ok(());
        };
        let from = self.ready;
        r.job
            .await
            .map_err(|e| io::Error::other(format!("read-ahead failed: {e}")))??;
        if self.mincore && !cached(&self.file, from, r.to) {
            self.mincore = false;
        }
        self.ready = r.to;
        Ok(())
    }
}

/// The system's page size (4 KiB, or 16/64 KiB on some arm64 kernels).
fn page_size() -> i64 {
    static PAGE: OnceLock<i64> = OnceLock::new();
    *PAGE.get_or_init(|| {
        // SAFETY: sysconf only reads a system constant.
        let p = unsafe { nix::libc::sysconf(nix::libc::_SC_PAGESIZE) };
        if p > 0 && (p & (p - 1)) == 0 {
            p as i64
        } else {
            4096
        }
    })
}

/// Whether every page of bytes `[from, to)` of `file` is in the page cache:
/// `mincore` on a mapping of them, which reads nothing and starts no I/O.
/// Any failure counts as "not cached", which only costs a read on the pool.
fn cached(file: &File, from: i64, to: i64) -> bool {
    use nix::libc;
    if to <= from {
        return true;
    }
    let page = page_size();
    let start = from & !(page - 1);
    let Ok(len) = usize::try_from(to - start) else {
        return false;
    };
    let pages = len.div_ceil(page as usize);
    let mut vec = [0u8; 256];
    if pages > vec.len() {
        return false;
    }
    // SAFETY: a fresh read-only shared mapping of an open file, never
    // dereferenced (mincore only asks the kernel about it), unmapped before
    // returning; `vec` has room for one byte per page of the mapping.
    unsafe {
        let at = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            file.as_raw_fd(),
            start,
        );
        if at == libc::MAP_FAILED {
            return false;
        }
        let ok = libc::mincore(at, len, vec.as_mut_ptr()) == 0;
        libc::munmap(at, len);
        ok && vec[..pages].iter().all(|v| v & 1 == 1)
    }
}

/// Brings bytes `[from, to)` of `file` into the page cache, on the pool:
/// asks the kernel to read them all at once, then reads them (into a small
/// per-thread buffer) so that they are there when this returns.
fn read_into_cache(file: &File, from: i64, to: i64) -> io::Result<()> {
    use nix::fcntl::{posix_fadvise, PosixFadviseAdvice};
    use std::cell::RefCell;
    use std::os::unix::fs::FileExt;
    thread_local! {
        static SCRATCH_BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    }
    posix_fadvise(
        file,
        from,
        to - from,
        PosixFadviseAdvice::POSIX_FADV_WILLNEED,
    )?;
    SCRATCH_BUF.with_borrow_mut(|buf| {
        buf.resize(SCRATCH, 0);
        let mut pos = u64::try_from(from).unwrap_or(0);
        let end = u64::try_from(to).unwrap_or(0);
        while pos < end {
            let want = usize::try_from(end - pos).map_or(SCRATCH, |n| n.min(SCRATCH));
            match file.read_at(&mut buf[..want], pos) {
                // The file shrank: `sendfile` will say so.
                Ok(0) => break,
                Ok(n) => pos += n as u64,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdir::TempDir;
    use std::io::Write;

    fn file_of(len: usize) -> (TempDir, Arc<File>) {
        let dir = TempDir::new("warm");
        let path = dir.path().join("f");
        let mut f = File::create(&path).unwrap();
        f.write_all(&vec![7u8; len]).unwrap();
        f.sync_all().unwrap();
        (dir, Arc::new(File::open(&path).unwrap()))
    }

    fn evict(file: &File) {
        nix::fcntl::posix_fadvise(
            file,
            0,
            0,
            nix::fcntl::PosixFadviseAdvice::POSIX_FADV_DONTNEED,
        )
        .unwrap();
    }

    #[test]
    fn mincore_sees_what_the_pool_read() {
        let (_dir, f) = file_of(3 * WINDOW as usize);
        evict(&f);
        // Clean pages of a synced file go at once; some filesystems
        // (tmpfs) keep them, and then there is nothing to test here.
        if cached(&f, 0, WINDOW) {
            return;
        }
        read_into_cache(&f, 0, WINDOW).unwrap();
        assert!(cached(&f, 0, WINDOW));
        assert!(!cached(&f, 2 * WINDOW, 3 * WINDOW));
    }

    #[test]
    fn a_walk_reaches_the_end_with_every_window_cached() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .max_blocking_threads(2)
            .build()
            .unwrap();
        let len = 5 * WINDOW + 123;
        let (_dir, f) = file_of(len as usize);
        evict(&f);
        let warmer = Warmer::new(2);
        rt.block_on(async {
            let mut walk = Ahead::new(f.clone(), 10, len);
            let mut offset = 10;
            while offset < len {
                let (ready, _) = walk.ready_from(offset, &warmer).await.unwrap();
                assert!(ready > offset && ready <= len);
                assert!(cached(&f, offset, ready) || !walk.mincore);
                offset = ready.min(offset + 100_000);
            }
        });
        // Every place is back once the walk is over.
        assert_eq!(warmer.places.available_permits(), 2);
    }
}
