//! The classifiers vab trains. Every network exposes `features` (the final feature maps, which
//! AttentionMix needs) and `forward` (logits = head(features)).

mod batch_norm;
mod conv;
mod flex_buffer;
mod max_pool;
pub mod op_profile;
mod resnet;
mod small;

use burn::module::{Module, ModuleVisitor, Param};
use burn::nn::Linear;
use burn::tensor::{Device, Tensor, TensorData};

pub use resnet::{ResNet18, Variant};
pub use small::SmallNet;

/// Architectures by name (config key `model.arch`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Arch {
    /// ResNet-18, CIFAR variant.
    Resnet18,
    /// ResNet-18, ImageNet variant (224 px).
    Resnet18Imagenet,
    /// PreAct-ResNet-18.
    PreactResnet18,
    /// The small CPU network, base width 32.
    Small,
}

/// One of the architectures, as a single module type the engine can train.
// ResNet-18's struct is larger than the small network's; a run holds one or two networks, so
// boxing it would add an indirection for no saving.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum Network {
    ResNet18(ResNet18),
    Small(SmallNet),
}

impl Network {
    /// A freshly initialised network; weights are drawn from the device's seeded RNG.
    ///
    /// burn initialises parameters lazily, and a parameter's clones share that initialisation:
    /// if a no-grad clone (the feature pass of AttentionMix) touched it first, the network itself
    /// would not track gradients. So every parameter is initialised here, on this network.
    pub fn new(arch: Arch, in_channels: usize, num_classes: usize, device: &Device) -> Self {
        let network = Self::uninitialised(arch, in_channels, num_classes, device);
        network.visit(&mut Initialise);
        network
    }

    fn uninitialised(arch: Arch, in_channels: usize, num_classes: usize, device: &Device) -> Self {
        match arch {
            Arch::Resnet18 => Network::ResNet18(ResNet18::new(Variant::Cifar, in_channels, num_classes, device)),
            Arch::Resnet18Imagenet => Network::ResNet18(ResNet18::new(Variant::ImageNet, in_channels, num_classes, device)),
            Arch::PreactResnet18 => Network::ResNet18(ResNet18::new(Variant::PreAct, in_channels, num_classes, device)),
            Arch::Small => Network::Small(SmallNet::new(in_channels, num_classes, 32, device)),
        }
    }

    /// Final feature maps, [batch, channels, h, w].
    pub fn features(&self, x: Tensor<4>) -> Tensor<4> {
        self.features_tapped(x, &mut |_| {})
    }

    /// [`Network::features`], with `tap` shown the output of every stage, first to last (four
    /// in both architectures; the last is the final feature maps). NAD distils their attention.
    pub fn features_tapped(&self, x: Tensor<4>, tap: &mut dyn FnMut(&Tensor<4>)) -> Tensor<4> {
        match self {
            Network::ResNet18(net) => net.features_tapped(x, tap),
            Network::Small(net) => net.features_tapped(x, tap),
        }
    }

    /// Logits from feature maps.
    pub fn head(&self, features: Tensor<4>) -> Tensor<2> {
        match self {
            Network::ResNet18(net) => net.head(features),
            Network::Small(net) => net.head(features),
        }
    }

    /// Width of the pooled features the final linear layer reads.
    pub fn feature_width(&self) -> usize {
        let fc = match self {
            Network::ResNet18(net) => net.fc(),
            Network::Small(net) => net.fc(),
        };
        fc.weight.dims()[0]
    }

    /// The network with the inputs `channels` of its final linear layer cut (their weights set
    /// to 0): the pooled feature channels Fine-Pruning removes. Other weights are unchanged; a
    /// training step moves the cut weights again, so a pruned network is cut after each step.
    pub fn without_head_inputs(self, channels: &[usize]) -> Self {
        match self {
            Network::ResNet18(net) => Network::ResNet18(net.map_fc(|fc| zero_inputs(fc, channels))),
            Network::Small(net) => Network::Small(net.map_fc(|fc| zero_inputs(fc, channels))),
        }
    }

    /// A copy that runs in train mode without recording an autodiff graph, as a PyTorch pass in
    /// train mode under `torch.no_grad()`: its batch norm normalises with the batch's statistics
    /// and moves the running statistics it shares with this network. (Detaching the output of
    /// a pass of the network itself would keep that pass's graph alive, unreleased.)
    pub fn without_grad(&self) -> Network {
        self.clone().no_grad()
    }

    /// Logits, [batch, classes].
    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        self.head(self.features(x))
    }
}

/// Held by unit tests that seed the process-wide device RNG or depend on its draws: they run
/// on parallel threads of one process, and a reseed between two draws would repeat weights.
#[cfg(test)]
pub(crate) static RNG_TEST_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Every float parameter of `model`, flattened in visiting order (tests compare them across steps).
#[cfg(test)]
pub(crate) fn parameters<M: Module>(model: &M) -> Vec<f32> {
    struct Flatten(Vec<f32>);
    impl ModuleVisitor for Flatten {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            self.0.extend(param.val().into_data().iter::<f32>());
        }
    }
    let mut all = Flatten(Vec::new());
    model.visit(&mut all);
    all.0
}

/// Initialises every float parameter it visits (reading a parameter initialises it).
pub(crate) struct Initialise;

impl ModuleVisitor for Initialise {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let _ = param.val();
    }
}

/// `fc` with the rows of `inputs` in its [inputs, outputs] weight set to 0, the parameter still
/// a leaf that trains if it did.
fn zero_inputs(mut fc: Linear, inputs: &[usize]) -> Linear {
    let [d_in, _] = fc.weight.dims();
    let mut keep = vec![1f32; d_in];
    for &i in inputs {
        keep[i] = 0.0;
    }
    fc.weight = fc.weight.map(|w| {
        let trains = w.is_require_grad();
        let mask: Tensor<2> = Tensor::from_data(TensorData::new(keep, [d_in, 1]), &w.device());
        (w * mask).detach().set_require_grad(trains)
    });
    fc
}

/// Mean over the spatial dimensions: [b, c, h, w] → [b, c].
pub(crate) fn global_average_pool(x: Tensor<4>) -> Tensor<2> {
    let [b, c, h, w] = x.dims();
    x.reshape([b, c, h * w]).mean_dim(2).reshape([b, c])
}
