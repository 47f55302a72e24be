namespace SensMerging.Zoo.Training;

/// <summary>How one model of the zoo is trained: AdamW with linear warm-up and cosine decay, gradient clipping.</summary>
/// <param name="Steps">Optimizer steps.</param>
/// <param name="BatchSize">Samples per step (right-padded; loss on the response tokens only).</param>
/// <param name="LearningRate">Peak learning rate.</param>
/// <param name="WarmupSteps">Steps of linear warm-up from 0 to the peak.</param>
/// <param name="MinLearningRateRatio">The cosine decay ends at this fraction of the peak.</param>
/// <param name="WeightDecay">
/// AdamW decoupled weight decay (toward zero). Not applied when <see cref="AnchorDecay"/> is set: the anchor replaces it.
/// </param>
/// <param name="ClipNorm">Global gradient-norm clip.</param>
/// <param name="Threads">
/// libtorch intra-op threads while training (restored afterwards). 1 by default: these models are small, and on a
/// shared 2-core machine two spinning OpenMP threads cost about 15x the CPU time of one (measured: 925 vs 62 ms/step).
/// </param>
/// <param name="FrozenTensors">
/// Tensor-name fragments left untouched while training (for example <c>embed_tokens</c> and <c>lm_head</c>, as
/// parameter-efficient fine-tunes leave them); empty or null trains every tensor.
/// </param>
/// <param name="LowRank">
/// 0: every trained tensor is updated in full. Above 0: a LoRA fine-tune of that rank; each linear map whose weight
/// is trained (see <see cref="FrozenTensors"/>) gets an adapter <c>alpha/r * B A</c>, only the adapters are trained
/// (embeddings and norms stay as they are), and they are folded into the full weights when training ends.
/// </param>
/// <param name="LowRankAlpha">The LoRA alpha (update scale alpha / rank); null: equal to the rank.</param>
/// <param name="AnchorDecay">
/// 0 (the default): AdamW with <see cref="WeightDecay"/> toward zero, as before. Above 0: decoupled weight decay toward
/// the weights the run started from instead of toward zero (AdamW's own decay is off): after every optimizer step each
/// trained tensor is pulled toward its starting value, <c>theta &lt;- theta - min(1, lr_t * AnchorDecay) * (theta -
/// theta_start)</c>, with <c>lr_t</c> the step's learning rate. For an expert fine-tuned from the base this keeps the
/// task vector small, as the implicit pull of short, regularised instruction fine-tunes of a strong base does; a very
/// large value keeps the weights at the start (the factor is capped at 1: the pull never overshoots). With LoRA the
/// trained tensors are the adapters, so they are pulled toward their initialisation (B toward zero).
/// </param>
public sealed record TrainingSettings(
    int Steps,
    int BatchSize,
    double LearningRate,
    int WarmupSteps,
    double MinLearningRateRatio = 0.1,
    double WeightDecay = 0.01,
    double ClipNorm = 1.0,
    int Threads = 1,
    IReadOnlyList<string>? FrozenTensors = null,
    int LowRank = 0,
    double? LowRankAlpha = null,
    [property: System.Text.Json.Serialization.JsonIgnore(Condition = System.Text.Json.Serialization.JsonIgnoreCondition.WhenWritingDefault)]
    double AnchorDecay = 0)
{
    /// <summary>True when the tensor <paramref name="name"/> is trained (no entry of <see cref="FrozenTensors"/> occurs in it).</summary>
    public bool Trains(string name)
    {
        ArgumentNullException.ThrowIfNull(name);
        return FrozenTensors is null || !FrozenTensors.Any(f => name.Contains(f, StringComparison.Ordinal));
    }

    /// <summary>Throws naming the first setting out of range.</summary>
    public void Validate()
    {
        if (Steps < 1)
        {
            throw new ArgumentException($"Training steps must be at least 1, got {Steps}.");
        }
        if (BatchSize < 1)
        {
            throw new ArgumentException($"Batch size must be at least 1, got {BatchSize}.");
        }
        if (!(LearningRate > 0) || double.IsInfinity(LearningRate))
        {
            throw new ArgumentException($"Learning rate must be positive, got {LearningRate}.");
        }
        if (WarmupSteps < 0 || WarmupSteps > Steps)
        {
            throw new ArgumentException($"Warm-up steps must be between 0 and {Steps}, got {WarmupSteps}.");
        }
        if (MinLearningRateRatio is < 0 or > 1)
        {
            throw new ArgumentException($"The minimum learning-rate ratio must be between 0 and 1, got {MinLearningRateRatio}.");
        }
        if (Threads < 1)
        {
            throw new ArgumentException($"Threads must be at least 1, got {Threads}.");
        }
        if (LowRank < 0)
        {
            throw new ArgumentException($"The LoRA rank must be 0 (full fine-tune) or positive, got {LowRank}.");
        }
        if (LowRankAlpha is { } alpha && (!(alpha > 0) || double.IsInfinity(alpha)))
        {
            throw new ArgumentException($"The LoRA alpha must be positive, got {alpha}.");
        }
        if (!(AnchorDecay >= 0) || double.IsInfinity(AnchorDecay))
        {
            throw new ArgumentException($"The anchor decay must be a finite number >= 0, got {AnchorDecay}.");
        }
        if (WeightDecay < 0 || !(ClipNorm > 0))
        {
            throw new ArgumentException($"Weight decay must be >= 0 and the clip norm > 0 (got {WeightDecay}, {ClipNorm}).");
        }
    }

    /// <summary>
    /// The share of the distance to the starting weights removed after step <paramref name="step"/>:
    /// <c>min(1, lr_t * AnchorDecay)</c>; 0 when <see cref="AnchorDecay"/> is 0.
    /// </summary>
    public double AnchorPullAt(int step) => AnchorDecay > 0 ? Math.Min(1.0, LearningRateAt(step) * AnchorDecay) : 0;

    /// <summary>The learning rate of step <paramref name="step"/> (0-based).</summary>
    public double LearningRateAt(int step)
    {
        if (WarmupSteps > 0 && step < WarmupSteps)
        {
            return LearningRate * (step + 1) / WarmupSteps;
        }
        var decaySteps = Math.Max(1, Steps - WarmupSteps);
        var progress = Math.Clamp((double)(step - WarmupSteps) / decaySteps, 0, 1);
        var cosine = 0.5 * (1 + Math.Cos(Math.PI * progress));
        return LearningRate * (MinLearningRateRatio + ((1 - MinLearningRateRatio) * cosine));
    }
}

/// <summary>What one training run did.</summary>
/// <param name="Steps">Optimizer steps taken.</param>
/// <param name="InitialLoss">Mean training loss over the first steps (up to 10).</param>
/// <param name="FinalLoss">Mean training loss over the last steps (up to 10).</param>
/// <param name="Seconds">Wall time of the run.</param>
/// <param name="SamplesSeen">Samples processed (steps x batch size).</param>
public sealed record TrainingReport(int Steps, double InitialLoss, double FinalLoss, double Seconds, long SamplesSeen);

/// <summary>Progress of a zoo build.</summary>
/// <param name="Stage">What is happening: <c>data</c>, <c>train</c>, <c>save</c>, <c>reuse</c>, <c>done</c>.</param>
/// <param name="Model">The model being trained (<c>base</c>, <c>math</c>, ...), or empty.</param>
/// <param name="Step">Steps done.</param>
/// <param name="TotalSteps">Steps planned.</param>
/// <param name="Loss">Recent mean training loss, or NaN.</param>
public sealed record ZooProgress(string Stage, string Model, int Step, int TotalSteps, double Loss);
