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

    /// <summary>
    /// The decorator's parameters for the merge as a whole (defaults applied, kinds and ranges checked). A parameter
    /// declared <see cref="ParameterSpec.PerLayerGroup"/> and given as a gradient or filter list has here its value in
    /// the first layer group; read <see cref="ParametersOf"/> for each group's.
    /// </summary>
    public required ResolvedParameters Parameters { get; init; }

    /// <summary>
    /// The decorator's parameters resolved for each layer group, in the order of <see cref="LayerGroups"/> (contract 1.6),
    /// as a strategy's are for each tensor: a gradient list is evaluated at the group's depth (block b of n blocks at
    /// b / (n - 1); the groups outside the blocks, embeddings, final norm and head, at 0, the list's first value), and a
    /// filter list takes the first entry whose filter is a substring of the group's name (<c>model.embed_tokens</c>,
    /// <c>model.layers.7</c>, <c>model.norm</c>, <c>lm_head</c>). Parameters not declared per layer group have the same
    /// value in every group. Empty from hosts before 1.6.
    /// </summary>
    public IReadOnlyList<ResolvedParameters> LayerGroupParameters { get; init; } = [];

    /// <summary>
    /// The parameters of layer group <paramref name="layerGroup"/> (<see cref="LayerGroupParameters"/>); <see cref="Parameters"/>
    /// for a group the merge does not have, and from hosts before 1.6.
    /// </summary>
    /// <param name="layerGroup">A name from <see cref="LayerGroups"/>.</param>
    /// <returns>The group's resolved parameters.</returns>
    public ResolvedParameters ParametersOf(string layerGroup)
    {
        ArgumentNullException.ThrowIfNull(layerGroup);
        if (LayerGroupParameters.Count == LayerGroups.Count)
        {
            for (var g = 0; g < LayerGroups.Count; g++)
            {
                if (string.Equals(LayerGroups[g], layerGroup, StringComparison.Ordinal))
                {
                    return LayerGroupParameters[g];
                }
            }
        }
        return Parameters;
    }

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
