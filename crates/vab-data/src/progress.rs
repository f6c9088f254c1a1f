//! A progress sink the loaders report to; the CLI draws it, libraries and tests ignore it.

/// Receives progress of long work (reading archives, decoding, downloading).
pub trait Progress: Sync {
    /// A new phase begins: `what` it is and how many units (`total`, 0 when unknown).
    fn start(&self, what: &str, total: u64);
    /// `n` more units are done.
    fn advance(&self, n: u64);
    /// The current phase is over.
    fn finish(&self);
}

/// Progress that goes nowhere.
pub struct NoProgress;

impl Progress for NoProgress {
    fn start(&self, _: &str, _: u64) {}
    fn advance(&self, _: u64) {}
    fn finish(&self) {}
}

/// A reader that reports the bytes it reads to a [`Progress`].
pub(crate) struct CountingReader<'a, R> {
    pub inner: R,
    pub progress: &'a dyn Progress,
}

impl<R: std::io::Read> std::io::Read for CountingReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.progress.advance(n as u64);
        Ok(n)
    }
}
