using SensMerging.Abstractions;
using SensMerging.Runtime.Calibration;

namespace SensMerging.Zoo;

/// <summary>Loads a built zoo's task data in the contract's shapes, ready for scorers.</summary>
public static class ZooDatasets
{
    /// <summary>The held-out evaluation set of <paramref name="task"/> (the first <paramref name="samples"/> samples).</summary>
    public static Task<TextDataset> LoadEvalAsync(ZooLayout layout, string task, int samples, int maxLength, CancellationToken cancellationToken) =>
        LoadHeldOutAsync(layout, task, HeldOutSplit.Eval, samples, maxLength, cancellationToken);

    /// <summary>The held-out set <paramref name="split"/> of <paramref name="task"/> (the first <paramref name="samples"/> samples).</summary>
    public static async Task<TextDataset> LoadHeldOutAsync(ZooLayout layout, string task, HeldOutSplit split, int samples, int maxLength, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(layout);
        return (await new CalibrationLoader().LoadAsync(layout.HeldOutPath(task, split), samples, maxLength, task, cancellationToken)).Dataset;
    }

    /// <summary>The calibration set of <paramref name="task"/> (the first <paramref name="samples"/> samples).</summary>
    public static async Task<TextDataset> LoadCalibrationAsync(ZooLayout layout, string task, int samples, int maxLength, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(layout);
        return (await new CalibrationLoader().LoadAsync(layout.CalibrationPath(task), samples, maxLength, task, cancellationToken)).Dataset;
    }

    /// <summary>
    /// The <see cref="ScoringContext.Models"/> list that evaluates every model on every task in one scorer call:
    /// one <see cref="ScoredModel"/> per (model, task), models outer, tasks in <paramref name="tasks"/> order.
    /// </summary>
    /// <param name="layout">The zoo whose evaluation sets are used.</param>
    /// <param name="models">Table name and local folder of each model (zoo models, merged models...).</param>
    /// <param name="tasks">Task names (for example <see cref="Tasks.ZooTasks.Names"/>).</param>
    /// <param name="samples">Evaluation samples per task.</param>
    /// <param name="maxLength">Tokens per sample.</param>
    /// <param name="cancellationToken">Cancels the file reads.</param>
    /// <param name="split">The held-out set to score on (the evaluation set unless settings are being chosen).</param>
    public static async Task<IReadOnlyList<ScoredModel>> EvaluationGridAsync(
        ZooLayout layout,
        IEnumerable<(string Name, string Path)> models,
        IEnumerable<string> tasks,
        int samples,
        int maxLength,
        CancellationToken cancellationToken,
        HeldOutSplit split = HeldOutSplit.Eval)
    {
        ArgumentNullException.ThrowIfNull(models);
        ArgumentNullException.ThrowIfNull(tasks);
        var data = new List<TextDataset>();
        foreach (var task in tasks)
        {
            data.Add(await LoadHeldOutAsync(layout, task, split, samples, maxLength, cancellationToken));
        }
        return models.SelectMany(m => data.Select(d => new ScoredModel(m.Name, m.Path, d))).ToList();
    }
}
