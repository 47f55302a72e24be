using TorchSharp;
using static TorchSharp.torch;

namespace SensMerging.Runtime.Model;

/// <summary>
/// The backward pass of <see cref="LlamaModel.BackwardLayerwise"/>: a forward pass without autograd keeps only the
/// block inputs <c>[1,T,H]</c>; then the head, each block from the last to the first and the embeddings are recomputed
/// with autograd one at a time, and <c>torch.autograd.grad</c> gives that part's weight gradients and the gradient of
/// its input, which seeds the part before. At most one block's activations and gradients exist at a time (plus, for a
/// tied head, the head's share of the embedding gradient, into which the lookup's gradient rows are added at the end:
/// one vocabulary-sized gradient table, not two).
/// </summary>
internal static class LayerwiseBackward
{
    public static double Run(LlamaModel model, Tensor ids, IReadOnlyList<long> positions, IReadOnlyList<long> targets, Action<int, Tensor, Tensor> onGradient, CancellationToken cancellationToken)
    {
        void Hand(Tensor weight, Tensor gradient)
        {
            // The caller's reduction must not record autograd history on the weights.
            using var noGrad = no_grad();
            onGradient(model.WeightIndex(weight), weight, gradient);
        }

        var network = model.Network;
        var layers = model.Config.NumHiddenLayers;
        var boundaries = new Tensor?[layers + 1];
        Tensor? upstream = null;
        Tensor? tiedHeadGradient = null;
        try
        {
            using (no_grad())
            {
                using (var step = NewDisposeScope())
                {
                    boundaries[0] = network.Embed(ids).DetachFromDisposeScope();
                }
                for (var i = 0; i < layers; i++)
                {
                    cancellationToken.ThrowIfCancellationRequested();
                    using var step = NewDisposeScope();
                    boundaries[i + 1] = network.ApplyLayer(i, boundaries[i]!).DetachFromDisposeScope();
                }
            }
            using var grad = set_grad_enabled(true);
            double loss;
            using (var step = NewDisposeScope())
            {
                var input = boundaries[layers]!.detach().requires_grad_(true);
                var hidden = network.FinalNorm(input).reshape(-1, model.Config.HiddenSize)
                    .index_select(0, tensor(positions.ToArray(), ScalarType.Int64, model.Device));
                var lossTensor = nn.functional.cross_entropy(network.Head(hidden), tensor(targets.ToArray(), ScalarType.Int64, model.Device));
                loss = lossTensor.to_type(ScalarType.Float64).item<double>();
                var norm = network.FinalNormWeight;
                var head = network.LmHeadWeight;
                var gradients = autograd.grad([lossTensor], [input, norm, head ?? network.EmbeddingWeight]);
                Hand(norm, gradients[1]);
                if (head is not null)
                {
                    Hand(head, gradients[2]);
                }
                else
                {
                    tiedHeadGradient = gradients[2].DetachFromDisposeScope();
                }
                upstream = gradients[0].DetachFromDisposeScope();
            }
            Release(boundaries, layers);
            for (var i = layers - 1; i >= 0; i--)
            {
                cancellationToken.ThrowIfCancellationRequested();
                using (var step = NewDisposeScope())
                {
                    var input = boundaries[i]!.detach().requires_grad_(true);
                    var output = network.ApplyLayer(i, input);
                    var weights = network.LayerParameters(i).Cast<Tensor>().ToArray();
                    var gradients = autograd.grad([output], [input, .. weights], [upstream]);
                    for (var k = 0; k < weights.Length; k++)
                    {
                        Hand(weights[k], gradients[k + 1]);
                        gradients[k + 1].Dispose();
                    }
                    upstream.Dispose();
                    upstream = gradients[0].DetachFromDisposeScope();
                }
                if (i > 0)
                {
                    Release(boundaries, i);
                }
            }
            using (var step = NewDisposeScope())
            {
                var embedding = network.EmbeddingWeight;
                if (tiedHeadGradient is null)
                {
                    Hand(embedding, autograd.grad([network.Embed(ids)], [embedding], [upstream])[0]);
                }
                else
                {
                    // Tied head: the weight's gradient is the sum of both uses. The lookup's share is added into the
                    // head's gradient rows of the sample's tokens in place (what the lookup's backward would add into a
                    // zero table of its own), so no second vocabulary-sized table is made.
                    var flat = ids.reshape(-1);
                    Tensor rows;
                    using (no_grad())
                    {
                        rows = embedding.index_select(0, flat);
                    }
                    rows.requires_grad_(true);
                    var embedded = LlamaNetwork.ScaleEmbeddings(model.Config, rows.reshape(ids.shape[0], ids.shape[1], -1));
                    var rowGradient = autograd.grad([embedded], [rows], [upstream])[0];
                    using var one = 1.0.ToScalar();
                    tiedHeadGradient.index_add_(0, flat, rowGradient, one);
                    Hand(embedding, tiedHeadGradient);
                }
            }
            return loss;
        }
        finally
        {
            for (var i = 0; i < boundaries.Length; i++)
            {
                Release(boundaries, i);
            }
            upstream?.Dispose();
            tiedHeadGradient?.Dispose();
        }
    }

    private static void Release(Tensor?[] boundaries, int index)
    {
        boundaries[index]?.Dispose();
        boundaries[index] = null;
    }
}
