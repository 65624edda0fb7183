//! The CPUID table each vCPU sees: what KVM supports on this host, with the APIC ID and the
//! topology (one socket, one thread per core, `count` cores) made consistent per vCPU.
//!
//! Linux derives its CPU numbering from these leaves (Intel SDM vol. 2A "CPUID": leaf 1 EBX,
//! leaves 0xB/0x1F extended topology, leaf 4 cache sharing; AMD APM vol. 3: 0x8000_0008 ECX,
//! 0x8000_001E), so a mismatch with the MADT would make it refuse or misnumber CPUs.

use kvm_bindings::kvm_cpuid_entry2;

/// Leaf 1 ECX bit 31: running under a hypervisor.
const LEAF1_ECX_HYPERVISOR: u32 = 1 << 31;
/// Leaf 1 EDX bit 28: more than one logical processor per package.
const LEAF1_EDX_HTT: u32 = 1 << 28;
/// Extended-topology level types (leaf 0xB/0x1F ECX[15:8]).
const LEVEL_SMT: u32 = 1;
const LEVEL_CORE: u32 = 2;

/// Number of APIC ID bits needed to number `count` cores.
fn core_id_bits(count: u32) -> u32 {
    match count {
        0 | 1 => 0,
        n => 32 - (n - 1).leading_zeros(),
    }
}

/// Rewrites the topology-dependent leaves of `entries` for vCPU `index` of `count`.
/// The APIC ID equals the vCPU index (the ACPI MADT uses the same numbering).
pub fn patch_for_vcpu(entries: &mut [kvm_cpuid_entry2], index: u32, count: u32) {
    let apic_id = index;
    let shift = core_id_bits(count);
    for e in entries.iter_mut() {
        match e.function {
            0x1 => {
                e.ebx = (e.ebx & 0x0000_ffff) | (apic_id << 24) | ((count & 0xff) << 16);
                e.ecx |= LEAF1_ECX_HYPERVISOR;
                if count > 1 {
                    e.edx |= LEAF1_EDX_HTT;
                } else {
                    e.edx &= !LEAF1_EDX_HTT;
                }
            }
            0x4 => {
                // Cores per package minus one, in EAX[31:26]; keep the cache description.
                let cores = (count - 1).min(0x3f);
                e.eax = (e.eax & 0x03ff_ffff) | (cores << 26);
            }
            0xb | 0x1f => {
                e.edx = apic_id;
                match e.index {
                    0 => {
                        e.eax = 0;
                        e.ebx = 1;
                        e.ecx = (LEVEL_SMT << 8) | e.index;
                    }
                    1 => {
                        e.eax = shift;
                        e.ebx = count;
                        e.ecx = (LEVEL_CORE << 8) | e.index;
                    }
                    _ => {
                        e.eax = 0;
                        e.ebx = 0;
                        e.ecx = e.index;
                    }
                }
            }
            0x8000_0008 => {
                // ApicIdSize in ECX[15:12], NC (cores minus one) in ECX[7:0].
                e.ecx = (e.ecx & !0xf0ff) | (shift << 12) | ((count - 1) & 0xff);
            }
            0x8000_001e => {
                // Extended APIC ID; compute unit = core, one thread each; node 0 of 1.
                e.eax = apic_id;
                e.ebx = apic_id & 0xff;
                e.ecx = 0;
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(function: u32, index: u32) -> kvm_cpuid_entry2 {
        kvm_cpuid_entry2 {
            function,
            index,
            ebx: 0x0004_0800,
            ..Default::default()
        }
    }

    #[test]
    fn apic_ids_and_topology() {
        let mut e = vec![
            entry(1, 0),
            entry(0xb, 0),
            entry(0xb, 1),
            entry(0xb, 2),
            entry(0x8000_0008, 0),
            entry(0x8000_001e, 0),
            entry(4, 0),
        ];
        patch_for_vcpu(&mut e, 3, 4);
        assert_eq!(e[0].ebx >> 24, 3, "initial APIC ID");
        assert_eq!((e[0].ebx >> 16) & 0xff, 4, "logical processor count");
        assert_eq!(e[0].ebx & 0xffff, 0x0800, "CLFLUSH size kept");
        assert_ne!(e[0].edx & LEAF1_EDX_HTT, 0);
        assert_ne!(e[0].ecx & LEAF1_ECX_HYPERVISOR, 0);
        assert_eq!((e[1].eax, e[1].ebx, e[1].ecx, e[1].edx), (0, 1, 0x100, 3));
        assert_eq!((e[2].eax, e[2].ebx, e[2].ecx, e[2].edx), (2, 4, 0x201, 3));
        assert_eq!((e[3].ebx, e[3].ecx >> 8), (0, 0), "topology ends");
        assert_eq!(e[4].ecx & 0xf0ff, 0x2003);
        assert_eq!((e[5].eax, e[5].ebx, e[5].ecx), (3, 3, 0));
        assert_eq!(e[6].eax >> 26, 3);

        patch_for_vcpu(&mut e, 0, 1);
        assert_eq!(e[0].edx & LEAF1_EDX_HTT, 0);
        assert_eq!((e[2].eax, e[2].ebx), (0, 1));
    }

    #[test]
    fn id_bits() {
        assert_eq!(core_id_bits(1), 0);
        assert_eq!(core_id_bits(2), 1);
        assert_eq!(core_id_bits(3), 2);
        assert_eq!(core_id_bits(4), 2);
        assert_eq!(core_id_bits(5), 3);
        assert_eq!(core_id_bits(254), 8);
    }
}
