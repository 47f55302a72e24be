using Microsoft.Extensions.Logging;

namespace SensMerging.Abstractions;

/// <summary>
/// Wraps any merge strategy (a third-party one included) and steers it, typically by replacing its per-model
/// weights per tensor. A decorator may run scorers first (through <see cref="DecoratorContext.Scorers"/>).
/// </summary>
public interface IStrategyDecorator : IPluginComponent
{
    /// <summary>Prepares the decorator (computing scores if it needs them) and returns the wrapped strategy.</summary>
    /// <param name="inner">The strategy to steer (any plugin's).</param>
    /// <param name="context">Experts, base, layer groups, parameters, scorers and runtime.</param>
    /// <param name="cancellationToken">Cancels the preparation.</param>
    /// <returns>A strategy that calls <paramref name="inner"/> with steered weights.</returns>
    Task<IDecoratedStrategy> DecorateAsync(IMergeStrategy inner, DecoratorContext context, CancellationToken cancellationToken);
}

/// <summary>A strategy wrapped by a decorator, with every number the decorator computed.</summary>
public interface IDecoratedStrategy : IMergeStrategy
{
    /// <summary>The wrapped strategy, which the decorated strategy calls with the steered <see cref="MergeTensorRequest.Weights"/>.</summary>
    IMergeStrategy Inner { get; }

    /// <summary>The settings and tables the decorator computed (for example its per expert and layer group coefficients).</summary>
    DecoratorReport Report { get; }
}

/// <summary>Everything a decorator may read.</summary>
public sealed record DecoratorContext
{
    /// <summary>The experts in merge order, with their calibration data.</summary>
    public required IReadOnlyList<ScoredModel> Experts { get; init; }

    /// <summary>The base model, when the merge has one.</summary>
    public ScoredModel? Base { get; init; }

    /// <summary>The layer groups of the model, in model order.</summary>
    public required IReadOnlyList<string> LayerGroups { get; init; }

    /// <summary>The decorator's parameters (defaults applied).</summary>
    public required ResolvedParameters Parameters { get; init; }

    /// <summary>Scorer plugins by name.</summary>
    public required IScorerCatalog Scorers { get; init; }

    /// <summary>The model runtime scorers use.</summary>
    public required IModelRuntime Runtime { get; init; }

    /// <summary>Where the decorator reports progress.</summary>
    public required ILogger Logger { get; init; }

    /// <summary>Compute device for scorers, <c>cpu</c> or <c>cuda</c>.</summary>
    public string Device { get; init; } = "cpu";

    /// <summary>
    /// Memory budget in bytes for a model the scorers load (<see cref="ModelLoadOptions.MaxMemoryBytes"/>), or null for
    /// no limit (contract 1.5). Beyond it the runtime streams the weights from disk block by block.
    /// </summary>
    public long? MaxMemoryBytes { get; init; }
}

/// <summary>Finds scorer plugins by name and runs them with their defaults or given parameters.</summary>
public interface IScorerCatalog
{
    /// <summary>The scorer named <paramref name="name"/>; throws <see cref="KeyNotFoundException"/> naming what is available when unknown.</summary>
    IScorer Get(string name);

    /// <summary>Resolves <paramref name="values"/> against the scorer's declared parameters (defaults, ranges).</summary>
    ResolvedParameters ResolveParameters(IScorer scorer, IReadOnlyDictionary<string, object> values);
}

/// <summary>What a decorator computed, for the registry and for <c>sensmerge scores</c>.</summary>
/// <param name="Decorator">The decorator's name.</param>
/// <param name="Settings">The settings it ran with (temperature, alignment reading, scorers...).</param>
/// <param name="Tables">Score tables and derived tables (for example alpha, tau, sigma, coefficients).</param>
public sealed record DecoratorReport(string Decorator, IReadOnlyDictionary<string, object> Settings, IReadOnlyList<ScoreTable> Tables);
