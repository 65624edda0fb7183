//! A minimal i8042 keyboard controller with no keyboard or mouse attached.
//!
//! The VMM needs it for one thing: the reset line (command 0xFE, used by Linux `reboot=k` and
//! by firmware-less guests). It still answers the controller protocol faithfully enough that a
//! guest probing it (Linux `drivers/input/serio/i8042.c` when the FADT or a PNP0303 device
//! claims a controller) finishes quickly and quietly: the self-test passes, the configuration
//! byte (CTR) reads back what was written, the controller reports that it has no auxiliary
//! (mouse) channel, and bytes sent to the absent keyboard come back as a transmit timeout.
//! The command set follows the IBM PC/AT technical reference and the PS/2 extensions.
//!
//! Register map relative to [`I8042_PORT`]: offset 0 is the data port (0x60), offset 4 the
//! status (read) / command (write) port (0x64); offsets 1–3 (0x61–0x63, not ours on a PC) read
//! as zero and ignore writes.

use std::collections::VecDeque;

use vmm_sys_util::eventfd::EventFd;

use super::{low_byte, RateLimitedLog};
use crate::bus::BusDevice;
use crate::{GuestRequest, GuestRequestHandler};

/// The data port; the device decodes [`I8042_PORT_LEN`] ports from here.
pub const I8042_PORT: u16 = 0x60;
/// 0x60..=0x64: data port, three unrelated ports, command/status port.
pub const I8042_PORT_LEN: u16 = 5;
/// The ISA line of the keyboard channel.
pub const I8042_KBD_IRQ: u32 = 1;

const DATA: u64 = 0;
const COMMAND: u64 = 4;

// Status register bits.
const STR_OBF: u8 = 1 << 0;
const STR_SYS: u8 = 1 << 2;
const STR_CMD: u8 = 1 << 3;
/// Keyboard not inhibited (the keylock switch is open).
const STR_UNLOCKED: u8 = 1 << 4;
const STR_TIMEOUT: u8 = 1 << 6;

// Controller configuration byte (CTR) bits.
const CTR_KBDINT: u8 = 1 << 0;
const CTR_SYS: u8 = 1 << 2;
const CTR_KBDDIS: u8 = 1 << 4;
const CTR_AUXDIS: u8 = 1 << 5;
const CTR_XLATE: u8 = 1 << 6;
/// What firmware leaves behind on a PC: keyboard interrupt on, POST passed, scan-code
/// translation on, the (absent) auxiliary channel disabled.
const CTR_DEFAULT: u8 = CTR_KBDINT | CTR_SYS | CTR_AUXDIS | CTR_XLATE;

// Output port bits: bit 0 is the CPU reset line (active low), bit 1 the A20 gate.
const OUTP_RESET_N: u8 = 1 << 0;
const OUTP_A20: u8 = 1 << 1;

/// The controller's own output buffer is one byte; a little queue lets a command answer and
/// a keyboard-channel byte coexist without losing either. Bounded: the guest fills it.
const OUTPUT_QUEUE_LEN: usize = 16;

/// Self-test answer (command 0xAA).
const SELF_TEST_OK: u8 = 0x55;
/// Answer of the auxiliary interface test (0xA9) meaning "clock line stuck low": there is no
/// auxiliary port, and Linux's `i8042_check_aux` takes any of 0x01–0x03 as that.
const AUX_TEST_ABSENT: u8 = 0x01;
/// What a controller returns for a byte the keyboard never acknowledged.
const KBD_TIMEOUT: u8 = 0xfe;

/// Controller commands that take a parameter byte on the data port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pending {
    WriteCtr,
    WriteRam,
    WriteOutputPort,
    /// 0xD2: the next data byte is presented as if the keyboard had sent it.
    KbdEcho,
    /// 0xD3: the next data byte is looped back as if the auxiliary device had sent it.
    AuxEcho,
    /// 0xD4: the next data byte goes to the (absent) auxiliary device.
    AuxWrite,
}

#[derive(Debug, Clone, Copy)]
struct OutByte {
    value: u8,
    timeout: bool,
}

/// The controller; see the module docs.
pub struct I8042 {
    on_request: GuestRequestHandler,
    kbd_irq: Option<EventFd>,
    ctr: u8,
    output_port: u8,
    self_tested: bool,
    last_was_command: bool,
    pending: Option<Pending>,
    output: VecDeque<OutByte>,
    last_read: u8,
    bad_access: RateLimitedLog,
}

impl I8042 {
    /// `on_request` receives [`GuestRequest::Reset`] when the guest pulses the reset line.
    pub fn new(on_request: GuestRequestHandler) -> Self {
        Self {
            on_request,
            kbd_irq: None,
            ctr: CTR_DEFAULT,
            output_port: OUTP_RESET_N | OUTP_A20,
            // Firmware ran the self-test before the OS got control.
            self_tested: true,
            last_was_command: false,
            pending: None,
            output: VecDeque::with_capacity(OUTPUT_QUEUE_LEN),
            last_read: 0,
            bad_access: RateLimitedLog::default(),
        }
    }

    /// Raises [`I8042_KBD_IRQ`] through `irq` (an irqfd) when the keyboard channel has a byte
    /// and the guest enabled its interrupt; without it the guest must poll the status port.
    pub fn with_keyboard_irq(mut self, irq: EventFd) -> Self {
        self.kbd_irq = Some(irq);
        self
    }

    fn status(&self) -> u8 {
        let mut status = STR_UNLOCKED;
        if self.self_tested {
            status |= STR_SYS;
        }
        if self.last_was_command {
            status |= STR_CMD;
        }
        if let Some(front) = self.output.front() {
            status |= STR_OBF;
            if front.timeout {
                status |= STR_TIMEOUT;
            }
        }
        status
    }

    /// Queues an answer of the controller itself. A new command supersedes whatever the
    /// guest left unread, so the queue is cleared first.
    fn answer(&mut self, value: u8) {
        self.output.clear();
        self.output.push_back(OutByte {
            value,
            timeout: false,
        });
    }

    /// Queues a byte on the keyboard channel and raises its interrupt if enabled.
    fn keyboard_byte(&mut self, value: u8, timeout: bool) {
        if self.output.len() >= OUTPUT_QUEUE_LEN {
            self.bad_access.warn(format_args!(
                "i8042: output queue full, byte {value:#04x} dropped"
            ));
            return;
        }
        self.output.push_back(OutByte { value, timeout });
        if self.ctr & CTR_KBDINT != 0 {
            if let Some(irq) = &self.kbd_irq {
                if let Err(e) = irq.write(1) {
                    self.bad_access
                        .warn(format_args!("i8042: cannot raise keyboard interrupt: {e}"));
                }
            }
        }
    }

    fn reset(&mut self) {
        log::info!("guest pulsed the i8042 reset line");
        (self.on_request)(GuestRequest::Reset);
    }

    fn command(&mut self, cmd: u8) {
        self.pending = None;
        match cmd {
            0x20 => self.answer(self.ctr),
            // The rest of the controller RAM holds nothing the guest can use.
            0x21..=0x3f => self.answer(0),
            0x60 => self.pending = Some(Pending::WriteCtr),
            0x61..=0x7f => self.pending = Some(Pending::WriteRam),
            0xa7 => self.ctr |= CTR_AUXDIS,
            0xa8 => self.ctr &= !CTR_AUXDIS,
            0xa9 => self.answer(AUX_TEST_ABSENT),
            0xaa => {
                self.self_tested = true;
                self.answer(SELF_TEST_OK);
            }
            // Keyboard interface test: the lines are fine, there is just nothing on them.
            0xab => self.answer(0x00),
            0xad => self.ctr |= CTR_KBDDIS,
            0xae => self.ctr &= !CTR_KBDDIS,
            // Input port: keylock open, no jumpers.
            0xc0 => self.answer(0x80),
            0xd0 => self.answer(self.output_port),
            0xd1 => self.pending = Some(Pending::WriteOutputPort),
            0xd2 => self.pending = Some(Pending::KbdEcho),
            0xd3 => self.pending = Some(Pending::AuxEcho),
            0xd4 => self.pending = Some(Pending::AuxWrite),
            // Pulse output-port lines: a clear bit 0 pulses the CPU reset line.
            0xf0..=0xff => {
                if cmd & 1 == 0 {
                    self.reset();
                }
            }
            _ => self
                .bad_access
                .warn(format_args!("i8042: unknown controller command {cmd:#04x}")),
        }
    }

    fn data(&mut self, value: u8) {
        match self.pending.take() {
            Some(Pending::WriteCtr) => self.ctr = value,
            Some(Pending::WriteRam) | Some(Pending::AuxWrite) => {}
            Some(Pending::WriteOutputPort) => {
                self.output_port = value;
                if value & OUTP_RESET_N == 0 {
                    self.reset();
                }
            }
            Some(Pending::KbdEcho) => self.keyboard_byte(value, false),
            // There is no auxiliary channel, so the loopback comes back on the keyboard
            // channel: a guest sees the signature of a controller without a mouse port
            // (Linux: "auxerr") at once instead of waiting for a timeout.
            Some(Pending::AuxEcho) => self.answer(value),
            // A byte for the keyboard, which is absent: report a transmit timeout.
            None => self.keyboard_byte(KBD_TIMEOUT, true),
        }
    }
}

impl BusDevice for I8042 {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let Some((first, rest)) = data.split_first_mut() else {
            return;
        };
        rest.fill(0);
        *first = match offset {
            DATA => {
                if let Some(byte) = self.output.pop_front() {
                    self.last_read = byte.value;
                }
                // An empty buffer reads back its last content, as on the real chip.
                self.last_read
            }
            COMMAND => self.status(),
            1..=3 => 0,
            _ => {
                self.bad_access
                    .warn(format_args!("i8042: read of unknown offset {offset:#x}"));
                0xff
            }
        };
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let Some(value) = low_byte(data) else {
            return;
        };
        match offset {
            DATA => {
                self.last_was_command = false;
                self.data(value);
            }
            COMMAND => {
                self.last_was_command = true;
                self.command(value);
            }
            1..=3 => {}
            _ => self.bad_access.warn(format_args!(
                "i8042: write of {value:#04x} to unknown offset {offset:#x}"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    fn device() -> (I8042, Arc<Mutex<Vec<GuestRequest>>>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = seen.clone();
        let dev = I8042::new(Arc::new(move |r| sink.lock().unwrap().push(r)));
        (dev, seen)
    }

    fn status(dev: &mut I8042) -> u8 {
        let mut b = [0];
        dev.read(COMMAND, &mut b);
        b[0]
    }

    fn data(dev: &mut I8042) -> u8 {
        let mut b = [0];
        dev.read(DATA, &mut b);
        b[0]
    }

    /// Linux's `i8042_command`: command, parameters, then one answer per expected byte,
    /// each only once the status port shows it.
    fn command(dev: &mut I8042, cmd: u8, params: &[u8], answers: usize) -> Option<Vec<u8>> {
        dev.write(COMMAND, &[cmd]);
        for p in params {
            dev.write(DATA, &[*p]);
        }
        let mut out = Vec::new();
        for _ in 0..answers {
            if status(dev) & STR_OBF == 0 {
                return None;
            }
            out.push(data(dev));
        }
        Some(out)
    }

    #[test]
    fn reset_command_requests_a_reset() {
        let (mut dev, seen) = device();
        dev.write(COMMAND, &[0xfe]);
        assert_eq!(*seen.lock().unwrap(), vec![GuestRequest::Reset]);
        // Pulsing only the A20 line (bit 0 set) is not a reset.
        dev.write(COMMAND, &[0xfd]);
        // Writing the output port with the reset line low is.
        command(&mut dev, 0xd1, &[OUTP_A20], 0).unwrap();
        assert_eq!(seen.lock().unwrap().len(), 2);
    }

    #[test]
    fn linux_probe_sequence_passes_and_finds_no_aux_port() {
        let (mut dev, seen) = device();
        // i8042_flush: nothing pending, status not 0xff ("no controller").
        let st = status(&mut dev);
        assert_ne!(st, 0xff);
        assert_eq!(st & STR_OBF, 0);
        // i8042_controller_selftest.
        assert_eq!(command(&mut dev, 0xaa, &[], 1), Some(vec![SELF_TEST_OK]));
        // i8042_controller_init: read CTR, write it back modified, read it again.
        let ctr = command(&mut dev, 0x20, &[], 1).unwrap()[0];
        assert_eq!(ctr, CTR_DEFAULT);
        let new_ctr = (ctr | CTR_KBDDIS) & !CTR_KBDINT;
        command(&mut dev, 0x60, &[new_ctr], 0).unwrap();
        assert_eq!(command(&mut dev, 0x20, &[], 1), Some(vec![new_ctr]));
        // i8042_check_aux: the loopback answers without AUXDATA, the aux test says absent.
        dev.write(COMMAND, &[0xd3]);
        dev.write(DATA, &[0x5a]);
        let st = status(&mut dev);
        assert_ne!(st & STR_OBF, 0);
        assert_eq!(st & (1 << 5), 0, "no AUXDATA: Linux sees auxerr");
        let aux_test = command(&mut dev, 0xa9, &[], 1).unwrap()[0];
        assert!((1..=3).contains(&aux_test));
        assert!(seen.lock().unwrap().is_empty());
    }

    #[test]
    fn bytes_to_the_absent_keyboard_time_out_and_raise_irq1() {
        let (dev, _seen) = device();
        let irq = EventFd::new(vmm_sys_util::eventfd::EFD_NONBLOCK).unwrap();
        let mut dev = dev.with_keyboard_irq(irq.try_clone().unwrap());
        dev.write(DATA, &[0xf2]); // atkbd GETID
        let st = status(&mut dev);
        assert_eq!(st & (STR_OBF | STR_TIMEOUT), STR_OBF | STR_TIMEOUT);
        assert_eq!(data(&mut dev), KBD_TIMEOUT);
        assert_eq!(status(&mut dev) & (STR_OBF | STR_TIMEOUT), 0);
        assert_eq!(irq.read().unwrap(), 1);
        // With the keyboard interrupt disabled in the CTR, no interrupt.
        command(&mut dev, 0x60, &[CTR_SYS], 0).unwrap();
        dev.write(DATA, &[0xf2]);
        assert!(irq.read().is_err(), "eventfd must still be empty");
    }

    #[test]
    fn output_queue_is_bounded() {
        let (mut dev, _seen) = device();
        for _ in 0..1000 {
            dev.write(DATA, &[0xee]);
        }
        let mut n = 0;
        while status(&mut dev) & STR_OBF != 0 {
            data(&mut dev);
            n += 1;
            assert!(n <= OUTPUT_QUEUE_LEN);
        }
        assert_eq!(n, OUTPUT_QUEUE_LEN);
    }

    #[test]
    fn odd_accesses_are_harmless() {
        let (mut dev, seen) = device();
        let mut wide = [0xaa; 4];
        dev.read(1, &mut wide);
        assert_eq!(wide, [0; 4]);
        dev.read(9, &mut wide);
        assert_eq!(wide, [0xff, 0, 0, 0]);
        dev.write(2, &[0xfe]);
        dev.write(9, &[0xfe]);
        dev.write(COMMAND, &[]);
        dev.write(COMMAND, &[0x01]); // unknown command
        dev.read(DATA, &mut []);
        assert!(seen.lock().unwrap().is_empty());
        // An empty output buffer reads back its last byte.
        assert_eq!(
            command(&mut dev, 0xd0, &[], 1),
            Some(vec![OUTP_RESET_N | OUTP_A20])
        );
        assert_eq!(data(&mut dev), OUTP_RESET_N | OUTP_A20);
    }
}
