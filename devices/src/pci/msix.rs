//! MSI-X (PCI Local Bus 3.0 §6.8.2): the vector table and pending-bit array a function
//! exposes in a BAR, and delivery of its vectors through irqfds.
//!
//! Each vector is backed by a GSI and an eventfd the VMM registered as an irqfd. When the
//! guest programs an unmasked entry, the GSI is routed to that message through the
//! [`MsiRouter`] (KVM's GSI routing table); firing the vector is then one eventfd write from
//! the device's worker, with no vCPU exit and no VMM thread involved. While a vector (or the
//! whole function) is masked, firing it sets its pending bit instead, and unmasking delivers it.

use std::io;
use std::sync::{Arc, Mutex, PoisonError};

use vmm_sys_util::eventfd::EventFd;

/// Bytes per table entry: message address low/high, data, vector control.
pub const ENTRY_BYTES: usize = 16;
/// Vector control bit 0: the entry is masked.
const ENTRY_MASKED: u32 = 1;
/// Message control bits (capability offset 2).
pub const CONTROL_ENABLE: u16 = 1 << 15;
pub const CONTROL_FUNCTION_MASK: u16 = 1 << 14;

/// An MSI message as the guest programmed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MsiMessage {
    pub address: u64,
    pub data: u32,
}

/// Points GSIs at MSI messages; implemented by the VMM over `KVM_SET_GSI_ROUTING`.
pub trait MsiRouter: Send + Sync {
    /// Routes `gsi` to `msg`, or removes its route with `None`.
    fn route(&self, gsi: u32, msg: Option<MsiMessage>) -> io::Result<()>;
}

/// One vector's delivery path, set up by the VMM.
pub struct MsixVector {
    pub gsi: u32,
    /// Registered as an irqfd for `gsi`.
    pub irqfd: EventFd,
}

struct State {
    table: Vec<u8>,
    pending: Vec<bool>,
    routed: Vec<Option<MsiMessage>>,
    enabled: bool,
    function_masked: bool,
}

/// The MSI-X state of one function; shared between the transport (guest accesses from vCPU
/// threads) and the device worker (which fires vectors).
pub struct Msix {
    state: Mutex<State>,
    vectors: Vec<MsixVector>,
    router: Arc<dyn MsiRouter>,
}

impl Msix {
    /// A table of `vectors.len()` entries, all masked, MSI-X disabled (the reset state).
    pub fn new(vectors: Vec<MsixVector>, router: Arc<dyn MsiRouter>) -> Self {
        let n = vectors.len();
        let mut table = vec![0u8; n * ENTRY_BYTES];
        for entry in table.chunks_exact_mut(ENTRY_BYTES) {
            entry[12] = ENTRY_MASKED as u8;
        }
        Self {
            state: Mutex::new(State {
                table,
                pending: vec![false; n],
                routed: vec![None; n],
                enabled: false,
                function_masked: false,
            }),
            vectors,
            router,
        }
    }

    pub fn len(&self) -> usize {
        self.vectors.len()
    }

    pub fn is_empty(&self) -> bool {
        self.vectors.is_empty()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A guest read of the vector table; bytes past it read as zero.
    pub fn read_table(&self, offset: u64, data: &mut [u8]) {
        let state = self.lock();
        for (i, b) in data.iter_mut().enumerate() {
            *b = offset
                .checked_add(i as u64)
                .and_then(|o| usize::try_from(o).ok())
                .and_then(|o| state.table.get(o))
                .copied()
                .unwrap_or(0);
        }
    }

    /// A guest write of the vector table (any width); re-routes and delivers as needed.
    pub fn write_table(&self, offset: u64, data: &[u8]) {
        let mut state = self.lock();
        let mut touched = Vec::new();
        for (i, b) in data.iter().enumerate() {
            let Some(o) = offset
                .checked_add(i as u64)
                .and_then(|o| usize::try_from(o).ok())
                .filter(|&o| o < state.table.len())
            else {
                continue;
            };
            // Reserved vector-control bits stay zero.
            let value = if o % ENTRY_BYTES == 12 {
                b & ENTRY_MASKED as u8
            } else if o % ENTRY_BYTES > 12 {
                0
            } else {
                *b
            };
            state.table[o] = value;
            let vector = o / ENTRY_BYTES;
            if !touched.contains(&vector) {
                touched.push(vector);
            }
        }
        for vector in touched {
            self.update(&mut state, vector);
        }
    }

    /// A guest read of the pending-bit array.
    pub fn read_pba(&self, offset: u64, data: &mut [u8]) {
        let state = self.lock();
        for (i, b) in data.iter_mut().enumerate() {
            let Some(byte) = offset.checked_add(i as u64) else {
                *b = 0;
                continue;
            };
            let mut v = 0u8;
            for bit in 0..8u64 {
                let vector = byte.saturating_mul(8).saturating_add(bit);
                if usize::try_from(vector)
                    .ok()
                    .and_then(|v| state.pending.get(v))
                    .copied()
                    .unwrap_or(false)
                {
                    v |= 1 << bit;
                }
            }
            *b = v;
        }
    }

    /// Applies the message control register the guest wrote (enable, function mask).
    pub fn set_control(&self, control: u16) {
        let mut state = self.lock();
        state.enabled = control & CONTROL_ENABLE != 0;
        state.function_masked = control & CONTROL_FUNCTION_MASK != 0;
        for vector in 0..self.vectors.len() {
            self.update(&mut state, vector);
        }
    }

    fn entry(state: &State, vector: usize) -> Option<(MsiMessage, bool)> {
        let e = state
            .table
            .get(vector * ENTRY_BYTES..(vector + 1) * ENTRY_BYTES)?;
        let word = |i: usize| u32::from_le_bytes([e[i], e[i + 1], e[i + 2], e[i + 3]]);
        let msg = MsiMessage {
            address: u64::from(word(0)) | u64::from(word(4)) << 32,
            data: word(8),
        };
        Some((msg, word(12) & ENTRY_MASKED != 0))
    }

    /// Brings `vector`'s route in line with its entry, and delivers a pending message if it
    /// just became deliverable.
    fn update(&self, state: &mut State, vector: usize) {
        let Some((msg, entry_masked)) = Self::entry(state, vector) else {
            return;
        };
        if !state.enabled || state.function_masked || entry_masked {
            return;
        }
        let Some(v) = self.vectors.get(vector) else {
            return;
        };
        if state.routed[vector] != Some(msg) {
            match self.router.route(v.gsi, Some(msg)) {
                Ok(()) => state.routed[vector] = Some(msg),
                Err(e) => {
                    log::error!("cannot route MSI-X vector {vector} (GSI {}): {e}", v.gsi);
                    return;
                }
            }
        }
        if std::mem::take(&mut state.pending[vector]) {
            if let Err(e) = v.irqfd.write(1) {
                log::error!("cannot signal MSI-X vector {vector}: {e}");
            }
        }
    }

    /// Fires `vector`: delivered now if unmasked, else left pending. Returns false if MSI-X
    /// is disabled or the vector does not exist (the message is dropped).
    pub fn trigger(&self, vector: u16) -> bool {
        let mut state = self.lock();
        let vector = usize::from(vector);
        let Some((_, entry_masked)) = Self::entry(&state, vector) else {
            return false;
        };
        if !state.enabled {
            return false;
        }
        if state.function_masked || entry_masked || state.routed[vector].is_none() {
            state.pending[vector] = true;
            return true;
        }
        if let Some(v) = self.vectors.get(vector) {
            if let Err(e) = v.irqfd.write(1) {
                log::error!("cannot signal MSI-X vector {vector}: {e}");
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Routes(Mutex<Vec<(u32, Option<MsiMessage>)>>);

    impl MsiRouter for Routes {
        fn route(&self, gsi: u32, msg: Option<MsiMessage>) -> io::Result<()> {
            self.0.lock().unwrap().push((gsi, msg));
            Ok(())
        }
    }

    fn msix(n: u32) -> (Msix, Arc<Routes>, Vec<EventFd>) {
        let routes = Arc::new(Routes::default());
        let mut fds = Vec::new();
        let vectors = (0..n)
            .map(|i| {
                let fd = EventFd::new(libc::EFD_NONBLOCK).unwrap();
                fds.push(fd.try_clone().unwrap());
                MsixVector {
                    gsi: 24 + i,
                    irqfd: fd,
                }
            })
            .collect();
        (Msix::new(vectors, routes.clone()), routes, fds)
    }

    fn program(m: &Msix, vector: u64, address: u64, data: u32, masked: bool) {
        let base = vector * ENTRY_BYTES as u64;
        m.write_table(base, &(address as u32).to_le_bytes());
        m.write_table(base + 4, &((address >> 32) as u32).to_le_bytes());
        m.write_table(base + 8, &data.to_le_bytes());
        m.write_table(base + 12, &u32::from(masked).to_le_bytes());
    }

    #[test]
    fn unmasked_vectors_are_routed_and_fire_their_irqfd() {
        let (m, routes, fds) = msix(2);
        assert!(!m.trigger(0), "MSI-X disabled");
        m.set_control(CONTROL_ENABLE);
        program(&m, 1, 0xfee0_0000, 0x41, false);
        assert_eq!(
            routes.0.lock().unwrap().last(),
            Some(&(
                25,
                Some(MsiMessage {
                    address: 0xfee0_0000,
                    data: 0x41
                })
            ))
        );
        assert!(m.trigger(1));
        assert_eq!(fds[1].read().unwrap(), 1);
        assert!(fds[0].read().is_err(), "vector 0 never fired");
        assert!(!m.trigger(7), "no such vector");
    }

    #[test]
    fn masked_vectors_pend_and_deliver_on_unmask() {
        let (m, _routes, fds) = msix(1);
        m.set_control(CONTROL_ENABLE);
        program(&m, 0, 0xfee0_0000, 0x30, true);
        assert!(m.trigger(0));
        assert!(fds[0].read().is_err());
        let mut pba = [0u8; 8];
        m.read_pba(0, &mut pba);
        assert_eq!(pba[0], 1);
        m.write_table(12, &0u32.to_le_bytes());
        assert_eq!(fds[0].read().unwrap(), 1);
        m.read_pba(0, &mut pba);
        assert_eq!(pba[0], 0);
        // Function mask pends too.
        m.set_control(CONTROL_ENABLE | CONTROL_FUNCTION_MASK);
        assert!(m.trigger(0));
        assert!(fds[0].read().is_err());
        m.set_control(CONTROL_ENABLE);
        assert_eq!(fds[0].read().unwrap(), 1);
    }

    #[test]
    fn table_reads_back_and_ignores_reserved_bits_and_stray_offsets() {
        let (m, _routes, _fds) = msix(2);
        let mut b = [0u8; 4];
        m.read_table(12, &mut b);
        assert_eq!(u32::from_le_bytes(b), 1, "masked at reset");
        m.write_table(12, &0xffff_fffeu32.to_le_bytes());
        m.read_table(12, &mut b);
        assert_eq!(u32::from_le_bytes(b), 0);
        for offset in [31u64, 32, 1000, u64::MAX] {
            m.write_table(offset, &[0xff; 8]);
            let mut b = [0u8; 8];
            m.read_table(offset, &mut b);
            m.read_pba(offset, &mut b);
        }
    }
}
