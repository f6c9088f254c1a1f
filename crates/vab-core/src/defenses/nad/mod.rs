//! NAD, Neural Attention Distillation (Li et al., ICLR 2021), a post-training defense that needs
//! a small clean set ([`super::clean_reserve`]). The network first trains as with no defense;
//! then, on the clean reserve:
//!
//! 1. **Teacher**: a copy of the backdoored network fine-tuned with cross-entropy for
//!    `teacher_epochs` (fine-tuning alone weakens the backdoor a little and keeps accuracy).
//! 2. **Distillation** ([`attention`]): the backdoored network trained for `epochs` on
//!    L = CE(f_S(x), y) + Σᵢ βᵢ·‖A(F_S,i) − A(F_T,i)‖² / n over its last three stages i, where
//!    F are a stage's feature maps, A(F) = a/‖a‖₂ with a = Σ_c |F_c|^p the attention map, and
//!    the teacher T is frozen in inference mode. Aligning the student's attention with the
//!    teacher's erases the trigger's neurons while the cross-entropy keeps accuracy.
//!
//! Both use the rate `lr` on the schedule `schedule`, batch `batch_size`, `[train]`'s
//! augmentation and optimiser, each a new one. Defaults and their sources: [`config::NadConfig`];
//! differences from the official code and BackdoorBench: docs/baselines.md.

pub mod attention;
pub mod config;
pub mod train;
