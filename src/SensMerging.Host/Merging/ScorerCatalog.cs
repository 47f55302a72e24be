using SensMerging.Abstractions;
using SensMerging.Core.Config;
using SensMerging.Host.Plugins;

namespace SensMerging.Host.Merging;

/// <summary>Scorer plugins by name for decorators, with parameters resolved against each scorer's declared specs.</summary>
public sealed class ScorerCatalog : IScorerCatalog
{
    private readonly PluginCatalog _plugins;
    private readonly ScoreCache? _cache;
    private readonly List<string> _used = [];

    /// <param name="plugins">Where scorers come from.</param>
    /// <param name="cache">Scores shared across merges of this process (null: always score).</param>
    public ScorerCatalog(PluginCatalog plugins, ScoreCache? cache = null)
    {
        _plugins = plugins;
        _cache = cache;
    }

    /// <summary>The scorers handed out so far (for provenance).</summary>
    public IReadOnlyList<string> Used => _used;

    public IScorer Get(string name)
    {
        var scorer = _plugins.GetScorer(name);
        if (!_used.Contains(name))
        {
            _used.Add(name);
        }
        return _cache is null ? scorer : new CachingScorer(scorer, _cache);
    }

    public ResolvedParameters ResolveParameters(IScorer scorer, IReadOnlyDictionary<string, object> values)
    {
        ArgumentNullException.ThrowIfNull(scorer);
        ArgumentNullException.ThrowIfNull(values);
        // Decorators pass their own settings through; keep only what the scorer declares.
        var declared = scorer.Parameters.Select(p => p.Name).ToHashSet(StringComparer.Ordinal);
        var own = values.Where(kv => declared.Contains(kv.Key)).ToDictionary(kv => kv.Key, kv => kv.Value, StringComparer.Ordinal);
        return ParameterResolver.ResolveComponent(scorer.Name, own, scorer.Parameters);
    }
}
