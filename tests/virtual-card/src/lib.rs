//! Placeholder: the virtual PIV card (issue 3).
