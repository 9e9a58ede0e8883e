//! The PVH entry: the ELF note that QEMU and Xen look for, and the 32-bit
//! code that gets from "protected mode, paging off, %ebx = start info" to
//! 64-bit Rust.
//!
//! The early page tables identity-map the first 4 GiB with 2 MiB pages, so
//! the start info (below 4 GiB: %ebx is 32 bits), the image and its `.bss`
//! are reachable. [`crate::arch::paging`] replaces them with tables built
//! from the memory map before anything else touches memory.

use core::arch::global_asm;

/// Bytes of boot stack: also the stack of the whole guest, since it never
/// leaves the boot CPU's first thread.
///
/// 1 MiB: `netcore::NetStack` is about 110 KiB (the IPoIB device's slot
/// queues and tables alone are 90 KiB) and is built and moved by value a
/// few times while the network comes up; with IPv6, multicast groups and
/// the DHCP client it no longer fit in 512 KiB (a double fault on the
/// guard page right after "channel connected").
pub const STACK_SIZE: usize = 1024 * 1024;

global_asm!(
    r#"
    /* XEN_ELFNOTE_PHYS32_ENTRY (18): the 32-bit entry's physical address. */
    .pushsection .note.Xen, "a", @note
    .balign 4
    .long 4                 /* namesz: "Xen\0" */
    .long 8                 /* descsz: QEMU reads 8 bytes for ELF64 */
    .long 18                /* type: XEN_ELFNOTE_PHYS32_ENTRY */
    .asciz "Xen"
    .balign 4
    .quad pvh_start
    .balign 4
    .popsection

    /* Early page tables, the stack and its guard page. */
    .pushsection .bss.boot, "aw", @nobits
    .balign 4096
    .global boot_pml4
boot_pml4:
    .skip 4096
boot_pdpt:
    .skip 4096
boot_pd:
    .skip 4096 * 4
    .global boot_stack_guard
boot_stack_guard:
    .skip 4096
    .global boot_stack_bottom
boot_stack_bottom:
    .skip {stack_size}
    .global boot_stack_top
boot_stack_top:
    .popsection

    .pushsection .rodata.boot, "a", @progbits
    .balign 8
boot_gdt:
    .quad 0
    .quad 0x00af9a000000ffff    /* 0x08: 64-bit code, DPL 0 */
    .quad 0x00cf92000000ffff    /* 0x10: data */
boot_gdt_end:
boot_gdt_ptr:
    .word boot_gdt_end - boot_gdt - 1
    .long boot_gdt
    .popsection

    .pushsection .text.boot, "ax", @progbits
    .code32
    .global pvh_start
pvh_start:
    cli
    cld
    mov %ebx, %esi              /* start info, kept in %esi throughout */

    /* Zero .bss (the loader should have; do not rely on it). */
    mov $__bss_start, %edi
    mov $__bss_end, %ecx
    sub %edi, %ecx
    xor %eax, %eax
    rep stosb

    /* PML4[0] -> PDPT; PDPT[0..4] -> PD0..PD3. */
    mov $boot_pdpt, %eax
    or $0x3, %eax
    mov %eax, boot_pml4
    mov $boot_pd, %eax
    or $0x3, %eax
    mov $boot_pdpt, %edi
    mov $4, %ecx
1:
    mov %eax, (%edi)
    add $0x1000, %eax
    add $8, %edi
    loop 1b

    /* 2048 PD entries: 2 MiB pages, present + writable + PS, 0..4 GiB. */
    mov $boot_pd, %edi
    mov $0x83, %eax
    mov $2048, %ecx
2:
    mov %eax, (%edi)
    add $0x200000, %eax
    add $8, %edi
    loop 2b

    mov $boot_pml4, %eax
    mov %eax, %cr3
    mov %cr4, %eax
    or $(1 << 5), %eax          /* PAE */
    mov %eax, %cr4
    mov $0xc0000080, %ecx       /* EFER */
    rdmsr
    or $((1 << 8) | (1 << 11)), %eax    /* LME, NXE */
    wrmsr
    mov %cr0, %eax
    or $0x80010001, %eax        /* PG, WP, PE */
    mov %eax, %cr0

    lgdt boot_gdt_ptr
    ljmp $0x08, $3f

    .code64
3:
    xor %eax, %eax
    mov %eax, %ds
    mov %eax, %es
    mov %eax, %fs
    mov %eax, %gs
    mov %eax, %ss
    mov $boot_stack_top, %rsp
    xor %ebp, %ebp
    mov %esi, %edi              /* arg 0: start info (zero-extended) */
    call {rust_entry}
4:
    cli
    hlt
    jmp 4b
    .popsection
"#,
    stack_size = const STACK_SIZE,
    rust_entry = sym super::start::boot_main,
    options(att_syntax)
);
