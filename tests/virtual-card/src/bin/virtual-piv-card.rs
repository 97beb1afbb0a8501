//! One virtual PIV card connected to a vsmartcard-vpcd reader; see `virtual_piv_card::cli`.

fn main() -> std::process::ExitCode {
    virtual_piv_card::cli::virtual_piv_card_main()
}
