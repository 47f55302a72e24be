using SensMerging.Abstractions;

namespace SensMerging.Zoo.Tasks;

/// <summary>How many samples a task family generates for each split.</summary>
/// <param name="Train">Training samples for the expert (an upper bound for finite families such as knowledge).</param>
/// <param name="Eval">Held-out evaluation samples (never in the training set).</param>
/// <param name="Calibration">Calibration samples (drawn from the training distribution, disjoint from the evaluation set).</param>
/// <param name="Pretraining">Samples of the family's raw pre-training corpus (an upper bound for finite families).</param>
/// <param name="Dev">
/// Held-out development samples, disjoint from training and from the evaluation set: the split on which settings
/// (for example the sens temperature) are chosen, so that the evaluation set is never used for choosing.
/// </param>
public sealed record TaskDataSizes(int Train, int Eval, int Calibration, int Dev, int Pretraining)
{
    /// <summary>Throws when a size is not positive.</summary>
    public void Validate()
    {
        if (Train < 1 || Eval < 1 || Calibration < 1 || Dev < 1 || Pretraining < 1)
        {
            throw new ArgumentException(
                $"Task data sizes must be positive (train {Train}, eval {Eval}, calibration {Calibration}, dev {Dev}, pretraining {Pretraining}).");
        }
    }
}

/// <summary>The samples of one task family for one seed.</summary>
/// <param name="Task">The family's name (<c>math</c>, <c>code</c>, <c>knowledge</c>).</param>
/// <param name="Train">The expert's training samples.</param>
/// <param name="BaseTrain">The part of the training distribution the base model sees (a subset of <paramref name="Train"/>).</param>
/// <param name="Eval">Held-out evaluation samples; no evaluation prompt occurs in <paramref name="Train"/>.</param>
/// <param name="Calibration">Calibration samples, taken from <paramref name="Train"/>.</param>
/// <param name="Dev">Development samples for choosing settings; no dev prompt occurs in <paramref name="Train"/> or <paramref name="Eval"/>.</param>
/// <param name="Pretraining">
/// The family's skills in the raw form a broad pre-training corpus holds (bare equations, bare string operations,
/// declarative statements of the facts), never in the task's prompt format: the base model learns the sub-skills from
/// these, so an expert's fine-tune mostly teaches the format and routing, as instruction tuning of a pre-trained model
/// does. No evaluation or development prompt occurs here.
/// </param>
public sealed record TaskSplits(
    string Task,
    IReadOnlyList<TextSample> Train,
    IReadOnlyList<TextSample> BaseTrain,
    IReadOnlyList<TextSample> Eval,
    IReadOnlyList<TextSample> Calibration,
    IReadOnlyList<TextSample> Dev,
    IReadOnlyList<TextSample> Pretraining);

/// <summary>A family of prompt/response tasks that is deterministic for a seed.</summary>
public interface ITaskFamily
{
    /// <summary>The task's name, used for folders, tables and the expert's repository name.</summary>
    string Name { get; }

    /// <summary>One sentence for model cards.</summary>
    string Description { get; }

    /// <summary>Generates the splits; the same seed and sizes give the same samples in the same order.</summary>
    TaskSplits Generate(int seed, TaskDataSizes sizes);
}
