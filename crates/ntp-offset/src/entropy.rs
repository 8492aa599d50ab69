//! Random bytes for NTS (nonces, cookies, master keys) from the kernel's generator, drawn a
//! page at a time so an answer costs no system call of its own.

use ntp_offset_proto::nts::Entropy;

const POOL: usize = 4096;

pub struct OsEntropy {
    pool: Box<[u8; POOL]>,
    used: usize,
}

impl Default for OsEntropy {
    fn default() -> Self {
        OsEntropy {
            pool: Box::new([0; POOL]),
            used: POOL,
        }
    }
}

impl Entropy for OsEntropy {
    fn fill(&mut self, mut out: &mut [u8]) {
        while !out.is_empty() {
            if self.used == POOL {
                // getrandom(2) blocks only before the kernel's pool is seeded, at early boot;
                // it does not fail on Linux otherwise.
                getrandom::fill(&mut self.pool[..]).expect("the kernel's random generator");
                self.used = 0;
            }
            let n = out.len().min(POOL - self.used);
            out[..n].copy_from_slice(&self.pool[self.used..self.used + n]);
            // Bytes handed out are not kept.
            self.pool[self.used..self.used + n].fill(0);
            self.used += n;
            out = &mut out[n..];
        }
    }
}
