//! Diagnostics without allocation: one tiny writer that formats into a stack buffer and calls
//! `write(2)` on stderr, and [`fatal`], which prints one line naming a fault and aborts.
//!
//! Owns nothing shared; safe to call with any allocator lock held (it takes none).

/// A fixed stack buffer that text and numbers are appended to; overflow is cut off.
pub struct Line {
    buf: [u8; 256],
    len: usize,
}

impl Default for Line {
    fn default() -> Self {
        Self::new()
    }
}

impl Line {
    pub const fn new() -> Self {
        Line {
            buf: [0; 256],
            len: 0,
        }
    }

    pub fn str(&mut self, s: &str) -> &mut Self {
        for &b in s.as_bytes() {
            if self.len < self.buf.len() {
                self.buf[self.len] = b;
                self.len += 1;
            }
        }
        self
    }

    pub fn dec(&mut self, mut n: u64) -> &mut Self {
        let mut tmp = [0u8; 20];
        let mut i = tmp.len();
        loop {
            i -= 1;
            tmp[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        for &b in &tmp[i..] {
            self.push(b);
        }
        self
    }

    pub fn hex(&mut self, mut n: u64) -> &mut Self {
        let mut tmp = [0u8; 16];
        let mut i = tmp.len();
        loop {
            i -= 1;
            let d = (n & 15) as u8;
            tmp[i] = if d < 10 { b'0' + d } else { b'a' + d - 10 };
            n >>= 4;
            if n == 0 {
                break;
            }
        }
        self.str("0x");
        for &b in &tmp[i..] {
            self.push(b);
        }
        self
    }

    fn push(&mut self, b: u8) {
        if self.len < self.buf.len() {
            self.buf[self.len] = b;
            self.len += 1;
        }
    }

    /// The text so far.
    #[cfg(any(test, feature = "gc"))]
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    /// Writes the line and a newline to stderr.
    pub fn emit(&mut self) {
        self.push(b'\n');
        let mut off = 0;
        while off < self.len {
            // SAFETY: the pointer and length describe initialised bytes of our buffer.
            let n = unsafe {
                libc::write(
                    2,
                    self.buf[off..].as_ptr() as *const libc::c_void,
                    self.len - off,
                )
            };
            if n <= 0 {
                break;
            }
            off += n as usize;
        }
    }
}

/// Prints `gomalloc: <what> <n>` (a warning: the process goes on).
#[cfg(feature = "gc")]
#[cold]
pub fn warn(what: &str, n: usize) {
    let mut l = Line::new();
    l.str("gomalloc: ").str(what).str(" ").dec(n as u64);
    l.emit();
}

/// Prints `gomalloc: <what> <addr> (class <size> B)` and aborts the process.
#[cold]
#[inline(never)]
pub fn fatal(what: &str, addr: usize, class_bytes: usize) -> ! {
    let mut l = Line::new();
    l.str("gomalloc: ").str(what).str(" ").hex(addr as u64);
    if class_bytes != 0 {
        l.str(" (class ").dec(class_bytes as u64).str(" B)");
    }
    l.emit();
    // SAFETY: abort has no preconditions.
    unsafe { libc::abort() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_numbers() {
        let mut l = Line::new();
        l.str("x ")
            .dec(0)
            .str(" ")
            .dec(1234567890123)
            .str(" ")
            .hex(0x7f00ab);
        assert_eq!(l.as_bytes(), b"x 0 1234567890123 0x7f00ab");
    }
}
