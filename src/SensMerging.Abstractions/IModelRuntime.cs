using static TorchSharp.torch;

namespace SensMerging.Abstractions;

/// <summary>Loads causal language models in the Hugging Face layout for scoring and evaluation.</summary>
public interface IModelRuntime
{
    /// <summary>Loads the model in <paramref name="modelPath"/> (config.json, safetensors, tokenizer).</summary>
    /// <param name="modelPath">A local folder in the Hugging Face layout.</param>
    /// <param name="options">Device, dtype and whether gradients are needed.</param>
    /// <param name="cancellationToken">Cancels the load.</param>
    /// <returns>The loaded model; the caller owns it and must dispose it.</returns>
    ICausalLanguageModel Load(string modelPath, ModelLoadOptions options, CancellationToken cancellationToken);
}

/// <summary>How to load a model.</summary>
/// <param name="Device">cpu or cuda.</param>
/// <param name="Dtype">Compute dtype; FP32 by default (sensitivities are computed in FP32).</param>
/// <param name="RequiresGrad">True when gradients will be taken with respect to the weights.</param>
public sealed record ModelLoadOptions(string Device = "cpu", ScalarType Dtype = ScalarType.Float32, bool RequiresGrad = false)
{
    /// <summary>
    /// The most memory, in bytes, the model's tensors (weights, gradients, activations kept between blocks) may take,
    /// or null for no limit (contract 1.5). A runtime that cannot hold the model within it streams the weights from
    /// its files block by block (out-of-core) and refuses, naming the numbers, a budget too small for even one block.
    /// </summary>
    public long? MaxMemoryBytes { get; init; }
}

/// <summary>A loaded decoder-only language model. Owns native memory: dispose it.</summary>
public interface ICausalLanguageModel : IDisposable
{
    /// <summary>The folder the model was loaded from.</summary>
    string ModelPath { get; }

    /// <summary>Number of rows of the embedding matrix (the last dimension of <see cref="Forward"/>'s logits).</summary>
    int VocabularySize { get; }

    /// <summary>Number of transformer blocks (<c>num_hidden_layers</c> of config.json).</summary>
    int LayerCount { get; }

    /// <summary>Turns text into token ids and a mask of the tokens whose next-token loss counts.</summary>
    ITextTokenizer Tokenizer { get; }

    /// <summary>The weights by Hugging Face name (tied weights appear once, under the embedding's name).</summary>
    IReadOnlyList<(string Name, Tensor Weight)> NamedWeights { get; }

    /// <summary>Logits <c>[batch, sequence, vocabulary]</c> for token ids <c>[batch, sequence]</c> (int64).</summary>
    Tensor Forward(Tensor inputIds);

    /// <summary>Mean next-token cross-entropy of <paramref name="sample"/> over its loss-mask tokens, as a scalar tensor (with autograd graph when gradients are on).</summary>
    Tensor Loss(TokenizedSample sample);

    /// <summary>Clears the gradients of all weights.</summary>
    void ZeroGradients();
}

/// <summary>
/// A model that takes the gradient of a sample's loss one block at a time (contract 1.4): a forward pass keeps only the
/// activations between blocks, then the backward pass recomputes one block at a time and hands each weight's gradient
/// to the caller as soon as it exists, freeing it right after. Gradient statistics (sensitivity, Fisher) then never hold
/// more than one block's gradients; the result equals a full <c>loss.backward()</c> up to float rounding.
/// </summary>
public interface ILayerwiseGradients
{
    /// <summary>
    /// Back-propagates the mean next-token cross-entropy of <paramref name="sample"/> (as <see cref="ICausalLanguageModel.Loss"/>)
    /// and calls <paramref name="onGradient"/> once per weight of <see cref="ICausalLanguageModel.NamedWeights"/> with its
    /// index there, the weight and its whole gradient (a tied weight once, with the sum of its uses). The gradient
    /// tensor is only valid during the call. The weights' own <c>.grad</c> stays untouched. A model streamed from disk
    /// under a memory budget, whose whole vocabulary-sized gradients would not fit, may throw
    /// <see cref="NotSupportedException"/> here and offer only the several-sample form, which hands pieces.
    /// </summary>
    /// <param name="sample">The tokenized sample; it must have at least one loss position.</param>
    /// <param name="onGradient">Receives (index in NamedWeights, weight, gradient), last block first.</param>
    /// <param name="cancellationToken">Checked between blocks.</param>
    /// <returns>The loss value.</returns>
    double BackwardLayerwise(TokenizedSample sample, Action<int, Tensor, Tensor> onGradient, CancellationToken cancellationToken);

    /// <summary>
    /// Each sample's own gradient, as <see cref="BackwardLayerwise(TokenizedSample, Action{int, Tensor, Tensor}, CancellationToken)"/>,
    /// for several samples at once (contract 1.5), so that a model streamed from disk reads each block once per group
    /// of samples rather than once per sample. <paramref name="onPiece"/> receives (sample index, weight index in
    /// <see cref="ICausalLanguageModel.NamedWeights"/>, weight values, gradient) for <em>pieces</em> of a weight: the
    /// pieces of one (sample, weight) are disjoint parts of the weight (row ranges, row sets, or the whole weight,
    /// where rows left out or zeroed in a piece's gradient are covered by another piece), so any statistic that is a
    /// sum over the weight's entries of f(value, gradient) with f(value, 0) = 0 (sum |theta x grad|, sum grad^2) is the
    /// sum over the pieces. Tensors are only valid during the call. The default takes the samples one at a time.
    /// </summary>
    /// <param name="samples">The tokenized samples; each must have at least one loss position.</param>
    /// <param name="onPiece">Receives (sample index, weight index, weight piece, gradient piece).</param>
    /// <param name="cancellationToken">Checked between blocks.</param>
    /// <returns>Each sample's loss value, in order.</returns>
    IReadOnlyList<double> BackwardLayerwise(IReadOnlyList<TokenizedSample> samples, Action<int, int, Tensor, Tensor> onPiece, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(samples);
        ArgumentNullException.ThrowIfNull(onPiece);
        var losses = new double[samples.Count];
        for (var s = 0; s < samples.Count; s++)
        {
            var index = s;
            losses[s] = BackwardLayerwise(samples[s], (k, weight, gradient) => onPiece(index, k, weight, gradient), cancellationToken);
        }
        return losses;
    }
}

/// <summary>A tokenizer as scorers need it.</summary>
public interface ITextTokenizer
{
    /// <summary>Token ids of a sample (with BOS where the model uses one), truncated to <paramref name="maxLength"/> tokens.</summary>
    TokenizedSample Encode(TextSample sample, int maxLength);

    /// <summary>Ids of plain text, without special tokens.</summary>
    IReadOnlyList<int> EncodeText(string text);

    /// <summary>Text of token ids, special tokens skipped.</summary>
    string Decode(IEnumerable<int> ids);

    /// <summary>End-of-sequence token id, or -1.</summary>
    int EosTokenId { get; }
}

/// <summary>Token ids and which positions' next-token predictions count (LossMask[t] scores predicting Ids[t+1]).</summary>
/// <param name="Ids">The token ids, in order.</param>
/// <param name="LossMask">One flag per position, as long as <paramref name="Ids"/>.</param>
public sealed record TokenizedSample(long[] Ids, bool[] LossMask)
{
    /// <summary>Number of tokens (the length of <see cref="Ids"/>).</summary>
    public int Length => Ids.Length;
}
