using SensMerging.Abstractions;
using SensMerging.Runtime.Model;
using static TorchSharp.torch;

namespace SensMerging.Zoo.Training;

/// <summary>
/// Distillation toward a frozen teacher on inputs the model is not being trained for ("learning without forgetting"):
/// in every batch, <see cref="SamplesPerBatch"/> samples are drawn from <see cref="Pools"/> (for a zoo expert, the other
/// task families' training samples) and their loss is the KL divergence from the teacher's (the base model's)
/// next-token distribution at their response positions, <see cref="KlToTeacher"/>, instead of the cross-entropy on
/// their ground truth. The step's loss is <c>(n_task / B) * CE + Weight * (n_distill / B) * KL</c>. It keeps an
/// expert's behaviour on the other experts' inputs at the base's, as real fine-tunes nearly do.
/// </summary>
/// <param name="Teacher">The frozen model whose distribution is kept (loaded without gradients).</param>
/// <param name="Pools">The off-task samples (each pool non-empty); drawn uniformly by pool, then in a seeded shuffle.</param>
/// <param name="Share">Share of each batch drawn from <paramref name="Pools"/>, in (0, 1).</param>
/// <param name="Weight">Weight of the KL term relative to the cross-entropy (per sample), positive.</param>
public sealed record OffTaskDistillation(LlamaModel Teacher, IReadOnlyList<IReadOnlyList<TextSample>> Pools, double Share, double Weight)
{
    /// <summary>Off-task samples in a batch of <paramref name="batchSize"/>: round(Share x B), at least 1 and at most B - 1.</summary>
    public int SamplesPerBatch(int batchSize)
    {
        if (batchSize < 2)
        {
            throw new ArgumentException($"Off-task distillation needs batches of at least 2 samples (one task, one off-task), got {batchSize}.", nameof(batchSize));
        }
        var count = (int)Math.Round(Share * batchSize, MidpointRounding.AwayFromZero);
        return Math.Clamp(count, 1, batchSize - 1);
    }

    /// <summary>Throws naming the first invalid part.</summary>
    public void Validate()
    {
        ArgumentNullException.ThrowIfNull(Teacher);
        ArgumentNullException.ThrowIfNull(Pools);
        if (!(Share > 0 && Share < 1))
        {
            throw new ArgumentException($"The off-task distillation share must be in (0, 1), got {Share}.");
        }
        if (!(Weight > 0) || double.IsInfinity(Weight))
        {
            throw new ArgumentException($"The off-task distillation weight must be a positive finite number, got {Weight}.");
        }
        if (Pools.Count == 0 || Pools.Any(p => p is null || p.Count == 0))
        {
            throw new ArgumentException("Off-task distillation needs at least one non-empty pool of off-task samples.");
        }
    }

    /// <summary>
    /// KL(teacher || student) of the next-token distributions, summed over the vocabulary and averaged over every
    /// loss-mask position of <paramref name="batch"/>: <c>mean_n sum_v p_t(v) (log p_t(v) - log p_s(v))</c>, with the
    /// autograd graph of <paramref name="student"/> (the teacher's side is a constant).
    /// </summary>
    public static Tensor KlToTeacher(LlamaModel student, LlamaModel teacher, IReadOnlyList<TokenizedSample> batch)
    {
        ArgumentNullException.ThrowIfNull(student);
        ArgumentNullException.ThrowIfNull(teacher);
        ArgumentNullException.ThrowIfNull(batch);
        using var scope = NewDisposeScope();
        Tensor teacherLog;
        using (no_grad())
        {
            teacherLog = nn.functional.log_softmax(teacher.LogitsAtLossPositions(batch).to(ScalarType.Float32), 1);
        }
        var studentLog = nn.functional.log_softmax(student.LogitsAtLossPositions(batch).to(ScalarType.Float32), 1);
        var kl = (teacherLog.exp() * (teacherLog - studentLog)).sum(1L).mean();
        return kl.MoveToOuterDisposeScope();
    }
}
