using System.Globalization;

namespace SensMerging.Runtime.Model;

/// <summary>
/// The memory arithmetic of a model under a budget (<see cref="SensMerging.Abstractions.ModelLoadOptions.MaxMemoryBytes"/>):
/// what the whole model takes in memory, what streaming it block by block needs at least, and, for a pass over some
/// samples, how many samples' layer-boundary activations fit beside one block and how many vocabulary rows the head
/// reads at a time. Sizes are of the compute dtype; the process's own runtime (.NET, libtorch) is not counted.
/// </summary>
public sealed class StreamingPlan
{
    private const long MiB = 1024L * 1024L;

    /// <summary>The plan of a model of <paramref name="config"/> whose weights take <paramref name="elementSize"/> bytes per element.</summary>
    public StreamingPlan(LlamaConfig config, int elementSize)
    {
        ArgumentNullException.ThrowIfNull(config);
        Config = config;
        ElementSize = elementSize;
        var h = (long)config.HiddenSize;
        var q = (long)config.NumAttentionHeads * config.HeadDim;
        var kv = (long)config.NumKeyValueHeads * config.HeadDim;
        var i = (long)config.IntermediateSize;
        var norms = config.SandwichNorms ? 4 : 2;
        var bias = config.AttentionBias || config.QkvBias ? q + (2 * kv) : 0;
        var oBias = config.AttentionBias ? h : 0;
        var qkNorm = config.QkNorm ? 2L * config.HeadDim : 0;
        LayerElements = (h * (q + (2 * kv))) + bias + (q * h) + oBias + (3 * h * i) + (norms * h) + qkNorm;
        EmbeddingElements = (long)config.VocabSize * h;
        WeightElements = (config.NumHiddenLayers * LayerElements) + EmbeddingElements + h + (config.TieWordEmbeddings ? 0 : EmbeddingElements);
    }

    public LlamaConfig Config { get; }

    /// <summary>Bytes per weight element in the compute dtype.</summary>
    public int ElementSize { get; }

    /// <summary>Elements of one block's weights.</summary>
    public long LayerElements { get; }

    /// <summary>Elements of the embedding table (and of an untied head).</summary>
    public long EmbeddingElements { get; }

    /// <summary>Elements of all weights (a tied head once).</summary>
    public long WeightElements { get; }

    /// <summary>Bytes of all weights in the compute dtype.</summary>
    public long WeightBytes => WeightElements * ElementSize;

    /// <summary>Bytes of one block's weights in the compute dtype.</summary>
    public long LayerBytes => LayerElements * ElementSize;

    /// <summary>
    /// What the model takes loaded whole: its weights, and with gradients the layer-by-layer pass's largest extra
    /// (one block's gradients, one vocabulary-sized gradient table: the head's, the embedding's, or a tied head's both
    /// summed in one, and the logits' gradient), plus one <paramref name="tokens"/>-token sample's activations.
    /// </summary>
    public long InMemoryBytes(bool requiresGrad, int tokens) =>
        WeightBytes + (requiresGrad ? LayerBytes + (EmbeddingElements * ElementSize) + LogitBytes(tokens) : 0) + LayerActivationBytes(tokens) + LogitBytes(tokens);

    /// <summary>
    /// The least a streamed pass needs: one block's weights and their gradients, the staging copy of a block's largest
    /// stored tensor, and one short sample's activations. A budget below it is refused.
    /// </summary>
    public long MinimumStreamingBytes => (2 * LayerBytes) + LayerBytes / 2 + LayerActivationBytes(16);

    /// <summary>Bytes reserved for the block in work during a streamed pass over samples of up to <paramref name="tokens"/> tokens.</summary>
    public long BlockReserveBytes(int tokens) => (2 * LayerBytes) + (LayerBytes / 2) + LayerActivationBytes(tokens);

    /// <summary>
    /// Bytes one sample of <paramref name="tokens"/> tokens (<paramref name="lossTokens"/> of them scored) keeps for the
    /// whole pass: its layer-boundary activations, its upstream gradient, its head inputs and gradients, its embedding rows.
    /// </summary>
    public long SampleBytes(int tokens, int lossTokens) =>
        (((Config.NumHiddenLayers + 2L) * tokens) + (3L * lossTokens) + (2L * tokens)) * Config.HiddenSize * 4 + (lossTokens * 16L);

    /// <summary>Activations and their gradients while one block of a <paramref name="tokens"/>-token sample is recomputed and back-propagated.</summary>
    public long LayerActivationBytes(int tokens)
    {
        var h = (long)Config.HiddenSize;
        var q = (long)Config.NumAttentionHeads * Config.HeadDim;
        var perToken = (12 * h) + (8 * q) + (6L * Config.IntermediateSize);
        return ((perToken * tokens) + (3L * Config.NumAttentionHeads * tokens * tokens)) * 4;
    }

    /// <summary>Full-vocabulary FP32 logits of one <paramref name="tokens"/>-token sample (a forward pass's output).</summary>
    public long LogitBytes(int tokens) => (long)tokens * Config.VocabSize * 4;

    /// <summary>
    /// Vocabulary rows the head reads and back-propagates at a time so that the head's working set stays within the
    /// block reserve (no block is resident during the head's sweeps). Per row: the rows in the compute dtype, their
    /// gradient and their staging copy; per row and scored token of the sample in work, the larger sweep's logits: the
    /// first sweep's FP32 logits and two FP64 copies (the running log-sum-exp), the second's logits, their shifted
    /// copy, its exponentials and their gradient, 20 bytes in all; a final soft-capping's division, tanh and their
    /// gradients add 12.
    /// </summary>
    public int HeadRows(int tokens, int lossTokens)
    {
        var perToken = 20L + (Config.FinalLogitSoftcapping is null ? 0 : 12);
        var perRow = (Config.HiddenSize * (2L * ElementSize + 2)) + (perToken * Math.Max(lossTokens, 1));
        var rows = BlockReserveBytes(tokens) / perRow;
        return (int)Math.Clamp(rows, 1, Config.VocabSize);
    }

    /// <summary>
    /// The share of a budget a pass leaves for what the plan does not itemize: one twentieth, for the C allocator's
    /// fragmentation and page rounding, the tensors' native handles, the scorer's reduction scratch (4 MiB), the RoPE
    /// tables of the samples' length and the code and state the process gains once a model is open (at the benchmark's
    /// size about 30 MB of a 650 MB budget: 17 MB gained on opening, 8 MB beyond the samples' estimate, the scratch).
    /// </summary>
    public static long Headroom(long budgetBytes) => budgetBytes / 20;

    /// <summary>
    /// How many samples one streamed pass takes under <paramref name="budgetBytes"/>: as many as fit beside the block
    /// reserve in the budget less its <see cref="Headroom"/> (at least one); throws naming the numbers when not even one
    /// sample fits.
    /// </summary>
    public int SamplesPerPass(long budgetBytes, int tokens, int lossTokens, int samples, string modelPath)
    {
        var reserve = BlockReserveBytes(tokens);
        var perSample = SampleBytes(tokens, lossTokens);
        var headroom = Headroom(budgetBytes);
        var fit = (budgetBytes - headroom - reserve) / perSample;
        if (fit < 1)
        {
            throw new InvalidOperationException(string.Create(CultureInfo.InvariantCulture,
                $"memory budget {Mb(budgetBytes)} is too small to stream {modelPath} over a {tokens}-token sample: one block's weights, gradients and activations take {Mb(reserve)}, the sample's layer-boundary activations {Mb(perSample)} and the allocator's headroom {Mb(headroom)} ({Mb(BudgetFor(1, tokens, lossTokens))} in all); raise --max-memory or shorten max_length."));
        }
        return (int)Math.Min(fit, samples);
    }

    /// <summary>The smallest budget under which a streamed pass takes <paramref name="samplesPerPass"/> samples of <paramref name="tokens"/> tokens.</summary>
    public long BudgetFor(int samplesPerPass, int tokens, int lossTokens)
    {
        var need = BlockReserveBytes(tokens) + (samplesPerPass * SampleBytes(tokens, lossTokens));
        // What a budget leaves, b - floor(b / 20), grows with b and is at most (19 b + 19) / 20: start below the least
        // budget that leaves the need and step up to it.
        var budget = Math.Max(0, ((20 * need) - 19) / 19 - 1);
        while (budget - Headroom(budget) < need)
        {
            budget++;
        }
        return budget;
    }

    /// <summary>Throws, naming the numbers, when <paramref name="budgetBytes"/> cannot hold even one block in a streamed pass.</summary>
    public void CheckStreamable(long budgetBytes, string modelPath)
    {
        if (budgetBytes < MinimumStreamingBytes)
        {
            throw new InvalidOperationException(string.Create(CultureInfo.InvariantCulture,
                $"memory budget {Mb(budgetBytes)} is too small for {modelPath}: streaming it block by block needs at least {Mb(MinimumStreamingBytes)} (one block's weights {Mb(LayerBytes)}, their gradients {Mb(LayerBytes)}, staging and activations); the whole model's weights take {Mb(WeightBytes)}."));
        }
    }

    /// <summary>Bytes as MiB with one decimal (the unit of the messages).</summary>
    public static string Mb(long bytes) => string.Create(CultureInfo.InvariantCulture, $"{bytes / (double)MiB:F1} MiB");
}
