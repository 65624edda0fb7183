use super::*;
use crate::pci::config::{COMMAND_BUS_MASTER, COMMAND_MEMORY_SPACE};

/// A function with one 4 KiB BAR that records BAR accesses.
struct Dummy {
    config: PciConfig,
    last_write: Option<(usize, u64, Vec<u8>)>,
    bar_changes: u32,
}

impl Dummy {
    fn new(addr: u32) -> Self {
        let mut config = PciConfig::new(&PciIdentity {
            vendor_id: 0x1af4,
            device_id: 0x1042,
            revision: 1,
            class_code: 0x01_80_00,
            subsystem_vendor_id: 0x1af4,
            subsystem_id: 2,
        });
        config.add_memory_bar(0, 0x1000, addr).unwrap();
        Self {
            config,
            last_write: None,
            bar_changes: 0,
        }
    }
}

impl PciDevice for Dummy {
    fn config(&self) -> &PciConfig {
        &self.config
    }
    fn read_config(&mut self, offset: u64, data: &mut [u8]) {
        self.config.read(offset, data)
    }
    fn write_config(&mut self, offset: u64, data: &[u8]) {
        self.config.write(offset, data)
    }
    fn read_bar(&mut self, _bar: usize, offset: u64, data: &mut [u8]) {
        data.fill(offset as u8);
    }
    fn write_bar(&mut self, bar: usize, offset: u64, data: &[u8]) {
        self.last_write = Some((bar, offset, data.to_vec()));
    }
    fn bars_changed(&mut self) {
        self.bar_changes += 1;
    }
}

fn cf8(slot: u32, reg: u32) -> [u8; 4] {
    (0x8000_0000 | slot << 11 | reg).to_le_bytes()
}

fn io_read32(io: &mut PciConfigIo, slot: u32, reg: u32) -> u32 {
    io.write(0, &cf8(slot, reg));
    let mut b = [0u8; 4];
    io.read(4, &mut b);
    u32::from_le_bytes(b)
}

fn root_with(devs: &[Arc<Mutex<Dummy>>]) -> Arc<PciRoot> {
    let root = PciRoot::new();
    for (i, d) in devs.iter().enumerate() {
        assert_eq!(root.add_device(d.clone()).unwrap(), i as u8 + 1);
    }
    Arc::new(root)
}

#[test]
fn config_ports_enumerate_stable_slots() {
    let a = Arc::new(Mutex::new(Dummy::new(0xc000_0000)));
    let b = Arc::new(Mutex::new(Dummy::new(0xc000_1000)));
    let root = root_with(&[a, b]);
    let mut io = PciConfigIo::new(root.clone());
    assert_eq!(io_read32(&mut io, 0, 0), 0x0008_1b36, "host bridge");
    assert_eq!(io_read32(&mut io, 0, 8) >> 8, 0x06_00_00);
    assert_eq!(io_read32(&mut io, 1, 0), 0x1042_1af4);
    assert_eq!(io_read32(&mut io, 2, 0x10), 0xc000_1000);
    assert_eq!(io_read32(&mut io, 3, 0), 0xffff_ffff, "empty slot");
    // Function 1 and bus 1 do not exist.
    io.write(0, &(0x8000_0100u32).to_le_bytes());
    let mut b = [0u8; 4];
    io.read(4, &mut b);
    assert_eq!(b, [0xff; 4]);
    io.write(0, &(0x8001_0000u32).to_le_bytes());
    io.read(4, &mut b);
    assert_eq!(b, [0xff; 4]);
    // Without the enable bit the data window reads all-ones.
    io.write(0, &0u32.to_le_bytes());
    io.read(4, &mut b);
    assert_eq!(b, [0xff; 4]);
    // The address register reads back; sub-dword data accesses hit the right bytes.
    io.write(0, &cf8(1, 0));
    let mut a = [0u8; 4];
    io.read(0, &mut a);
    assert_eq!(u32::from_le_bytes(a), 0x8000_0800);
    let mut w = [0u8; 2];
    io.read(6, &mut w);
    assert_eq!(u16::from_le_bytes(w), 0x1042);
}

#[test]
fn ecam_reaches_the_same_functions() {
    let a = Arc::new(Mutex::new(Dummy::new(0xc000_0000)));
    let root = root_with(&[a]);
    let mut ecam = PciConfigMmio::new(root);
    let mut b = [0u8; 4];
    ecam.read(1 << 15, &mut b);
    assert_eq!(u32::from_le_bytes(b), 0x1042_1af4);
    ecam.read((1 << 15) | 0x100, &mut b);
    assert_eq!(b, [0; 4], "extended space past the header reads zero");
    ecam.read(1 << 20, &mut b);
    assert_eq!(b, [0xff; 4], "bus 1");
    ecam.read((1 << 15) | 0xffe, &mut b);
    assert_eq!(b, [0xff; 4], "access crossing into the next function");
    ecam.write((1 << 15) | 4, &COMMAND_BUS_MASTER.to_le_bytes());
    ecam.read((1 << 15) | 4, &mut b);
    assert_eq!(b[0] as u16, COMMAND_BUS_MASTER);
}

#[test]
fn bars_decode_only_when_enabled_and_follow_the_guest() {
    let a = Arc::new(Mutex::new(Dummy::new(0xc000_0000)));
    let root = root_with(std::slice::from_ref(&a));
    let mut window = PciMmioWindow::new(root.clone(), 0xc000_0000);
    let mut b = [0u8; 4];
    window.read(0x10, &mut b);
    assert_eq!(b, [0xff; 4], "memory decoding is off after reset");
    let mut io = PciConfigIo::new(root.clone());
    io.write(0, &cf8(1, 4));
    io.write(4, &(COMMAND_MEMORY_SPACE as u32).to_le_bytes());
    window.read(0x10, &mut b);
    assert_eq!(b, [0x10; 4]);
    window.write(0x20, &[1, 2]);
    assert_eq!(a.lock().unwrap().last_write, Some((0, 0x20, vec![1, 2])));
    // Sizing then moving the BAR.
    io.write(0, &cf8(1, 0x10));
    io.write(4, &[0xff; 4]);
    assert_eq!(io_read32(&mut io, 1, 0x10), 0xffff_f000);
    window.read(0x10, &mut b);
    assert_eq!(
        b, [0xff; 4],
        "nothing decodes while the BAR holds its size mask"
    );
    io.write(0, &cf8(1, 0x10));
    io.write(4, &0xc010_0000u32.to_le_bytes());
    window.read(0x10_0008, &mut b);
    assert_eq!(b, [0x8; 4]);
    window.read(0x0ffe, &mut b);
    assert_eq!(b, [0xff; 4], "access straddling the BAR start");
    window.read(0x10_0ffe, &mut b);
    assert_eq!(b, [0xff; 4], "access straddling the BAR end");
    assert!(a.lock().unwrap().bar_changes >= 3);
}

#[test]
fn bus_is_full_at_32_slots() {
    let root = PciRoot::new();
    for _ in 1..NUM_SLOTS {
        root.add_device(Arc::new(Mutex::new(Dummy::new(0))))
            .unwrap();
    }
    assert_eq!(
        root.add_device(Arc::new(Mutex::new(Dummy::new(0)))),
        Err(PciRootError::NoFreeSlot)
    );
    assert_eq!(root.len(), NUM_SLOTS);
}

#[test]
fn a_removed_device_stops_decoding_and_its_slot_is_reused() {
    let a = Arc::new(Mutex::new(Dummy::new(0xc000_0000)));
    let b = Arc::new(Mutex::new(Dummy::new(0xc000_1000)));
    let root = root_with(&[a, b]);
    let mut io = PciConfigIo::new(root.clone());
    io.write(0, &cf8(1, 4));
    io.write(4, &u32::from(COMMAND_MEMORY_SPACE).to_le_bytes());
    let mut byte = [0u8; 1];
    assert!(root.mmio_read(0xc000_0010, &mut byte));
    assert!(root.remove_device(0).is_none(), "the host bridge stays");
    assert!(root.remove_device(1).is_some());
    assert!(root.remove_device(1).is_none(), "already gone");
    assert_eq!(
        io_read32(&mut io, 1, 0),
        0xffff_ffff,
        "an empty slot reads as no device"
    );
    assert!(
        !root.mmio_read(0xc000_0010, &mut byte),
        "its BAR no longer decodes"
    );
    assert_eq!(io_read32(&mut io, 2, 0), 0x1042_1af4, "the others stay");
    assert_eq!(root.free_slot(), Some(1));
    let c = Arc::new(Mutex::new(Dummy::new(0xc000_0000)));
    assert_eq!(
        root.add_device(c.clone()).unwrap(),
        1,
        "the freed slot is reused"
    );
    assert_eq!(root.insert_device(2, c), Err(PciRootError::SlotTaken(2)));
    assert_eq!(root.free_slot(), Some(3));
}

#[test]
fn hostile_accesses_never_panic() {
    let a = Arc::new(Mutex::new(Dummy::new(0xc000_0000)));
    let root = root_with(&[a]);
    let mut io = PciConfigIo::new(root.clone());
    let mut ecam = PciConfigMmio::new(root.clone());
    let mut window = PciMmioWindow::new(root, 0xc000_0000);
    for offset in [
        0u64,
        1,
        3,
        4,
        5,
        7,
        8,
        0xfff,
        0x0fff_fffc,
        u64::MAX - 3,
        u64::MAX,
    ] {
        for len in [1usize, 2, 4, 8] {
            let mut b = vec![0u8; len];
            io.write(offset, &vec![0xff; len]);
            io.read(offset, &mut b);
            ecam.write(offset, &vec![0xff; len]);
            ecam.read(offset, &mut b);
            window.write(offset, &vec![0xff; len]);
            window.read(offset, &mut b);
        }
    }
}
