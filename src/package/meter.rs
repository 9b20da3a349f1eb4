//! Counting readers around a decompressor: compressed bytes consumed on one
//! side, decompressed bytes produced on the other. The output side refuses to
//! go on once the ratio is over the limit, so a compression bomb stops after
//! about a megabyte, wherever the bytes are being read (file data, tar headers,
//! GNU long names held in memory by the tar crate).

use std::cell::Cell;
use std::io::{self, Read};
use std::rc::Rc;

use super::RATIO_FLOOR;

#[derive(Debug)]
pub(crate) struct Meter {
    compressed: Cell<u64>,
    produced: Cell<u64>,
    input_eof: Cell<bool>,
    tripped: Cell<bool>,
    max_ratio: u64,
}

/// Whether `produced` bytes out of `compressed` bytes in breaks the limit.
pub(crate) fn ratio_exceeded(produced: u64, compressed: u64, max_ratio: u64) -> bool {
    produced > RATIO_FLOOR && produced > compressed.max(1).saturating_mul(max_ratio)
}

impl Meter {
    pub(crate) fn new(max_ratio: u64) -> Rc<Meter> {
        Rc::new(Meter {
            compressed: Cell::new(0),
            produced: Cell::new(0),
            input_eof: Cell::new(false),
            tripped: Cell::new(false),
            max_ratio,
        })
    }

    /// For a zip member, whose compressed size is known up front (the zip
    /// reader never hands the inflater more than that).
    pub(crate) fn with_compressed(max_ratio: u64, compressed: u64) -> Rc<Meter> {
        let m = Meter::new(max_ratio);
        m.compressed.set(compressed);
        m
    }

    pub(crate) fn tripped(&self) -> bool {
        self.tripped.get()
    }

    /// The raw input ran out; an error now most likely means truncation.
    pub(crate) fn input_eof(&self) -> bool {
        self.input_eof.get()
    }

    pub(crate) fn compressed(&self) -> u64 {
        self.compressed.get()
    }
}

/// Counts compressed bytes read from the archive.
pub(crate) struct CountIn<R> {
    pub(crate) inner: R,
    pub(crate) meter: Rc<Meter>,
}

impl<R: Read> Read for CountIn<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && !buf.is_empty() {
            self.meter.input_eof.set(true);
        }
        let m = &self.meter;
        m.compressed.set(m.compressed.get() + n as u64);
        Ok(n)
    }
}

/// Counts decompressed bytes and fails once the ratio is exceeded.
pub(crate) struct CountOut<R> {
    pub(crate) inner: R,
    pub(crate) meter: Rc<Meter>,
}

impl<R: Read> Read for CountOut<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let m = &self.meter;
        if m.tripped.get() {
            return Err(io::Error::other("compression ratio limit exceeded"));
        }
        let n = self.inner.read(buf)?;
        let produced = m.produced.get() + n as u64;
        m.produced.set(produced);
        if ratio_exceeded(produced, m.compressed.get(), m.max_ratio) {
            m.tripped.set(true);
            return Err(io::Error::other("compression ratio limit exceeded"));
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn ratio_rule() {
        // Small streams are never bombs.
        assert!(!ratio_exceeded(RATIO_FLOOR, 1, 200));
        assert!(!ratio_exceeded(200 * RATIO_FLOOR, RATIO_FLOOR, 200));
        assert!(ratio_exceeded(200 * RATIO_FLOOR + 1, RATIO_FLOOR, 200));
        assert!(ratio_exceeded(RATIO_FLOOR + 1, 0, 200));
        assert!(!ratio_exceeded(u64::MAX, u64::MAX / 2, u64::MAX));
    }

    #[test]
    fn counts_and_trips_on_a_gzip_bomb() {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(&vec![0u8; 8 << 20]).unwrap();
        let bomb = gz.finish().unwrap();
        let meter = Meter::new(200);
        let inner = CountIn {
            inner: &bomb[..],
            meter: meter.clone(),
        };
        let mut out = CountOut {
            inner: flate2::read::GzDecoder::new(inner),
            meter: meter.clone(),
        };
        let err = io::copy(&mut out, &mut io::sink()).unwrap_err();
        assert!(meter.tripped(), "{err}");
        assert!(meter.produced.get() < 2 * RATIO_FLOOR + (1 << 16));

        // The same data with a generous limit goes through, counted exactly.
        let meter = Meter::new(10_000);
        let mut out = CountOut {
            inner: flate2::read::GzDecoder::new(CountIn {
                inner: &bomb[..],
                meter: meter.clone(),
            }),
            meter: meter.clone(),
        };
        assert_eq!(io::copy(&mut out, &mut io::sink()).unwrap(), 8 << 20);
        assert_eq!(meter.compressed(), bomb.len() as u64);
        assert!(!meter.tripped());
    }
}
