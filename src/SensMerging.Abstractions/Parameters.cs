using System.Globalization;

namespace SensMerging.Abstractions;

/// <summary>The type of a declared parameter.</summary>
public enum ParameterKind
{
    /// <summary>A number, resolved as <see cref="double"/>.</summary>
    Float,

    /// <summary>A whole number, resolved as <see cref="long"/>.</summary>
    Integer,

    /// <summary>True or false, resolved as <see cref="bool"/>.</summary>
    Boolean,

    /// <summary>Text, resolved as <see cref="string"/> (optionally limited to <see cref="ParameterSpec.AllowedValues"/>).</summary>
    String,
}

/// <summary>Whether a parameter has one value for the whole merge or one per input model.</summary>
public enum ParameterScope
{
    /// <summary>One value for the merge (mergekit: top-level <c>parameters</c>).</summary>
    Global,

    /// <summary>One value per input model (mergekit: <c>models[].parameters</c>), with a global fallback.</summary>
    PerModel,
}

/// <summary>A parameter a component declares: the host validates configured values against it.</summary>
/// <param name="Name">The key in the config (lower_snake_case); <c>weight</c> is the per-model weight the host puts in <see cref="MergeTensorRequest.Weights"/>.</param>
/// <param name="Kind">The value's type.</param>
/// <param name="Default">The value when the config gives none, or null when the parameter is required.</param>
/// <param name="Scope">Global or per model.</param>
/// <param name="Description">One sentence for <c>sensmerge plugins list</c> and error messages.</param>
public sealed record ParameterSpec(string Name, ParameterKind Kind, object? Default, ParameterScope Scope, string Description)
{
    /// <summary>Smallest allowed value (inclusive) for numeric parameters.</summary>
    public double? Minimum { get; init; }

    /// <summary>Largest allowed value (inclusive) for numeric parameters.</summary>
    public double? Maximum { get; init; }

    /// <summary>Allowed values for string parameters; empty means any.</summary>
    public IReadOnlyList<string> AllowedValues { get; init; } = [];

    /// <summary>True when the configuration must give a value (no default).</summary>
    public bool Required => Default is null;

    /// <summary>
    /// For a decorator's parameter (contract 1.6): true when its value may differ between layer groups, given as a
    /// strategy's parameters are, a list interpolated over depth (a gradient) or a list of <c>{filter, value}</c>
    /// entries; the host resolves it for every layer group (<see cref="DecoratorContext.LayerGroupParameters"/>). False
    /// (the default): one value for the whole merge, and a gradient or filter list is refused naming the parameter.
    /// Strategies' parameters vary per tensor whatever this says.
    /// </summary>
    public bool PerLayerGroup { get; init; }

    /// <summary>A float parameter with an optional inclusive range.</summary>
    /// <param name="name">The key in the config.</param>
    /// <param name="default">The default, or null when required.</param>
    /// <param name="scope">Global or per model.</param>
    /// <param name="description">One sentence for users.</param>
    /// <param name="min">Smallest allowed value, or null.</param>
    /// <param name="max">Largest allowed value, or null.</param>
    /// <returns>The spec.</returns>
    public static ParameterSpec Float(string name, double? @default, ParameterScope scope, string description, double? min = null, double? max = null) =>
        new(name, ParameterKind.Float, @default, scope, description) { Minimum = min, Maximum = max };

    /// <summary>An integer parameter with an optional inclusive range.</summary>
    /// <param name="name">The key in the config.</param>
    /// <param name="default">The default, or null when required.</param>
    /// <param name="scope">Global or per model.</param>
    /// <param name="description">One sentence for users.</param>
    /// <param name="min">Smallest allowed value, or null.</param>
    /// <param name="max">Largest allowed value, or null.</param>
    /// <returns>The spec.</returns>
    public static ParameterSpec Integer(string name, long? @default, ParameterScope scope, string description, long? min = null, long? max = null) =>
        new(name, ParameterKind.Integer, @default, scope, description) { Minimum = min, Maximum = max };

    /// <summary>A boolean parameter.</summary>
    /// <param name="name">The key in the config.</param>
    /// <param name="default">The default, or null when required.</param>
    /// <param name="scope">Global or per model.</param>
    /// <param name="description">One sentence for users.</param>
    /// <returns>The spec.</returns>
    public static ParameterSpec Boolean(string name, bool? @default, ParameterScope scope, string description) =>
        new(name, ParameterKind.Boolean, @default, scope, description);

    /// <summary>A string parameter limited to <paramref name="allowed"/> (any string when none are given).</summary>
    /// <param name="name">The key in the config.</param>
    /// <param name="default">The default, or null when required.</param>
    /// <param name="scope">Global or per model.</param>
    /// <param name="description">One sentence for users.</param>
    /// <param name="allowed">The allowed values.</param>
    /// <returns>The spec.</returns>
    public static ParameterSpec Choice(string name, string? @default, ParameterScope scope, string description, params string[] allowed) =>
        new(name, ParameterKind.String, @default, scope, description) { AllowedValues = allowed };
}

/// <summary>
/// Parameter values as the host resolved them for one tensor (or for one decorator/scorer run): defaults
/// applied, layer interpolation and filters evaluated, validated against the declared specs. Values are
/// <see cref="double"/>, <see cref="long"/>, <see cref="bool"/> or <see cref="string"/>.
/// </summary>
public sealed class ResolvedParameters
{
    private readonly IReadOnlyDictionary<string, object> _global;
    private readonly IReadOnlyList<IReadOnlyDictionary<string, object>> _perModel;

    /// <summary>Parameters from global values and per-model values (hosts and tests create these; plugins read them).</summary>
    /// <param name="global">Values by name for the whole merge.</param>
    /// <param name="perModel">Values by name for each model, in model order (may be shorter than the model list).</param>
    public ResolvedParameters(IReadOnlyDictionary<string, object> global, IReadOnlyList<IReadOnlyDictionary<string, object>> perModel)
    {
        _global = global;
        _perModel = perModel;
    }

    /// <summary>No values at all.</summary>
    public static ResolvedParameters Empty { get; } = new(new Dictionary<string, object>(), []);

    /// <summary>The global values by name.</summary>
    public IReadOnlyDictionary<string, object> Global => _global;

    /// <summary>The per-model values by name, one dictionary per model in model order.</summary>
    public IReadOnlyList<IReadOnlyDictionary<string, object>> PerModel => _perModel;

    /// <summary>A value for model <paramref name="model"/>, falling back to the global value.</summary>
    /// <param name="name">The parameter's name.</param>
    /// <param name="model">The model index, or -1 for the global value.</param>
    /// <returns>The value; throws <see cref="KeyNotFoundException"/> when there is none.</returns>
    public object Get(string name, int model = -1)
    {
        if (model >= 0 && model < _perModel.Count && _perModel[model].TryGetValue(name, out var v))
        {
            return v;
        }
        if (_global.TryGetValue(name, out var g))
        {
            return g;
        }
        throw new KeyNotFoundException($"parameter '{name}' has no value{(model >= 0 ? $" for model {model}" : string.Empty)}");
    }

    /// <summary>True when <paramref name="name"/> has a value for <paramref name="model"/> or globally.</summary>
    /// <param name="name">The parameter's name.</param>
    /// <param name="model">The model index, or -1 for the global value.</param>
    public bool Has(string name, int model = -1) =>
        (model >= 0 && model < _perModel.Count && _perModel[model].ContainsKey(name)) || _global.ContainsKey(name);

    /// <summary><see cref="Get"/> converted to <see cref="double"/> (invariant culture).</summary>
    /// <param name="name">The parameter's name.</param>
    /// <param name="model">The model index, or -1 for the global value.</param>
    public double Float(string name, int model = -1) => Convert.ToDouble(Get(name, model), CultureInfo.InvariantCulture);

    /// <summary><see cref="Get"/> converted to <see cref="long"/> (invariant culture).</summary>
    /// <param name="name">The parameter's name.</param>
    /// <param name="model">The model index, or -1 for the global value.</param>
    public long Integer(string name, int model = -1) => Convert.ToInt64(Get(name, model), CultureInfo.InvariantCulture);

    /// <summary><see cref="Get"/> as <see cref="bool"/>: booleans as they are, strings parsed, numbers true when not zero.</summary>
    /// <param name="name">The parameter's name.</param>
    /// <param name="model">The model index, or -1 for the global value.</param>
    public bool Boolean(string name, int model = -1) => Get(name, model) switch
    {
        bool b => b,
        string s => bool.Parse(s),
        var o => Convert.ToDouble(o, CultureInfo.InvariantCulture) != 0,
    };

    /// <summary><see cref="Get"/> as a string (invariant culture).</summary>
    /// <param name="name">The parameter's name.</param>
    /// <param name="model">The model index, or -1 for the global value.</param>
    public string String(string name, int model = -1) => Convert.ToString(Get(name, model), CultureInfo.InvariantCulture) ?? string.Empty;
}
