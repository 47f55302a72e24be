using Microsoft.Extensions.Logging;
using SensMerging.Abstractions;
using SensMerging.Core.Config;
using SensMerging.Host.Plugins;

namespace SensMerging.Host.Demo;

/// <summary>One model's scores on the tasks: exact match (0..1) and perplexity per task.</summary>
public sealed record ModelScores(string Model, IReadOnlyDictionary<string, double> ExactMatch, IReadOnlyDictionary<string, double> Perplexity)
{
    public double AverageExactMatch => ExactMatch.Count == 0 ? double.NaN : ExactMatch.Values.Average();
}

/// <summary>Runs the evaluation scorer plugins (<c>exact_match</c>, <c>perplexity</c>) over every (model, task) pair.</summary>
public sealed class ModelEvaluator
{
    public const string ExactMatch = "exact_match";
    public const string Perplexity = "perplexity";

    private readonly PluginCatalog _plugins;
    private readonly IModelRuntime _runtime;
    private readonly ILogger<ModelEvaluator> _logger;

    public ModelEvaluator(PluginCatalog plugins, IModelRuntime runtime, ILogger<ModelEvaluator> logger)
    {
        _plugins = plugins;
        _runtime = runtime;
        _logger = logger;
    }

    /// <param name="grid">One entry per (model, task): the model's name and folder with the task's held-out set.</param>
    /// <param name="device">cpu or cuda.</param>
    /// <param name="samples">Samples per task.</param>
    /// <param name="cancellationToken">Cancels between models.</param>
    public async Task<IReadOnlyList<ModelScores>> EvaluateAsync(IReadOnlyList<ScoredModel> grid, string device, int samples, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(grid);
        var exact = await RunAsync(ExactMatch, grid, device, samples, cancellationToken);
        var perplexity = await RunAsync(Perplexity, grid, device, samples, cancellationToken);
        return [.. exact.Rows.Select(model => new ModelScores(model, Row(exact, model), Row(perplexity, model)))];
    }

    /// <summary>One model's row of an evaluation table, by task.</summary>
    private static Dictionary<string, double> Row(ScoreTable table, string model)
    {
        var row = table.Values[table.Rows.ToList().IndexOf(model)];
        return table.Columns.Select((task, c) => (task, c)).ToDictionary(x => x.task, x => row[x.c], StringComparer.Ordinal);
    }

    private async Task<ScoreTable> RunAsync(string name, IReadOnlyList<ScoredModel> grid, string device, int samples, CancellationToken cancellationToken)
    {
        var scorer = _plugins.GetScorer(name);
        var parameters = ParameterResolver.ResolveComponent(name, new Dictionary<string, object> { ["samples"] = (long)samples }, scorer.Parameters);
        var context = new ScoringContext
        {
            Models = grid,
            Runtime = _runtime,
            Parameters = parameters,
            Logger = _logger,
            Device = device,
        };
        return await scorer.ScoreAsync(context, cancellationToken);
    }
}
