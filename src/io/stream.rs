//! A `BufMut` that streams into a writer, so a model is encoded straight to disk: weights go from the input's
//! memory map to the output file without a second copy of the model in memory.

use std::io::Write;

use bytes::buf::UninitSlice;
use bytes::{Buf, BufMut};

const CHUNK: usize = 1 << 16;

pub struct StreamBuf<W: Write> {
    out: W,
    buf: Vec<u8>,
    pub error: Option<std::io::Error>,
    pub written: u64,
}

impl<W: Write> StreamBuf<W> {
    pub fn new(out: W) -> Self {
        StreamBuf {
            out,
            buf: Vec::with_capacity(CHUNK),
            error: None,
            written: 0,
        }
    }

    fn write_through(&mut self, data: &[u8]) {
        if self.error.is_none()
            && let Err(e) = self.out.write_all(data)
        {
            self.error = Some(e);
        }
        self.written += data.len() as u64;
    }

    fn flush_buf(&mut self) {
        let buf = std::mem::take(&mut self.buf);
        self.write_through(&buf);
        self.buf = buf;
        self.buf.clear();
    }

    /// Flushes what is buffered and returns the writer, or the first write error.
    pub fn finish(mut self) -> std::io::Result<W> {
        self.flush_buf();
        match self.error.take() {
            Some(e) => Err(e),
            None => {
                self.out.flush()?;
                Ok(self.out)
            }
        }
    }
}

// SAFETY: `chunk_mut` hands out the vector's spare capacity, and `advance_mut` only grows the length over bytes
// the caller has just initialized there, as the `BufMut` contract requires.
unsafe impl<W: Write> BufMut for StreamBuf<W> {
    fn remaining_mut(&self) -> usize {
        isize::MAX as usize
    }

    unsafe fn advance_mut(&mut self, cnt: usize) {
        let len = self.buf.len() + cnt;
        assert!(len <= self.buf.capacity());
        // SAFETY: see the impl comment.
        unsafe { self.buf.set_len(len) };
    }

    fn chunk_mut(&mut self) -> &mut UninitSlice {
        if self.buf.len() == self.buf.capacity() {
            self.flush_buf();
        }
        UninitSlice::uninit(self.buf.spare_capacity_mut())
    }

    fn put_slice(&mut self, src: &[u8]) {
        if self.buf.len() + src.len() <= self.buf.capacity() {
            self.buf.extend_from_slice(src);
        } else {
            self.flush_buf();
            if src.len() >= CHUNK {
                self.write_through(src);
            } else {
                self.buf.extend_from_slice(src);
            }
        }
    }

    fn put<T: Buf>(&mut self, mut src: T)
    where
        Self: Sized,
    {
        while src.has_remaining() {
            let chunk = src.chunk();
            let n = chunk.len();
            self.put_slice(chunk);
            src.advance(n);
        }
    }
}
