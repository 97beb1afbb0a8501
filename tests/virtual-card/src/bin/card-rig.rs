//! A private pcscd with virtual readers and virtual PIV cards; see `virtual_piv_card::cli`.

fn main() -> std::process::ExitCode {
    virtual_piv_card::cli::card_rig_main()
}
