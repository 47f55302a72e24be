using System.Globalization;

namespace SensMerging.Abstractions;

/// <summary>The type of a declared parameter.</summary>
public enum ParameterKind
{
    Float,
    Integer,
    Boolean,
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

    public static ParameterSpec Float(string name, double? @default, ParameterScope scope, string description, double? min = null, double? max = null) =>
        new(name, ParameterKind.Float, @default, scope, description) { Minimum = min, Maximum = max };

    public static ParameterSpec Integer(string name, long? @default, ParameterScope scope, string description, long? min = null, long? max = null) =>
        new(name, ParameterKind.Integer, @default, scope, description) { Minimum = min, Maximum = max };

    public static ParameterSpec Boolean(string name, bool? @default, ParameterScope scope, string description) =>
        new(name, ParameterKind.Boolean, @default, scope, description);

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

    public ResolvedParameters(IReadOnlyDictionary<string, object> global, IReadOnlyList<IReadOnlyDictionary<string, object>> perModel)
    {
        _global = global;
        _perModel = perModel;
    }

    public static ResolvedParameters Empty { get; } = new(new Dictionary<string, object>(), []);

    public IReadOnlyDictionary<string, object> Global => _global;

    public IReadOnlyList<IReadOnlyDictionary<string, object>> PerModel => _perModel;

    /// <summary>A value for model <paramref name="model"/>, falling back to the global value.</summary>
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

    public bool Has(string name, int model = -1) =>
        (model >= 0 && model < _perModel.Count && _perModel[model].ContainsKey(name)) || _global.ContainsKey(name);

    public double Float(string name, int model = -1) => Convert.ToDouble(Get(name, model), CultureInfo.InvariantCulture);

    public long Integer(string name, int model = -1) => Convert.ToInt64(Get(name, model), CultureInfo.InvariantCulture);

    public bool Boolean(string name, int model = -1) => Get(name, model) switch
    {
        bool b => b,
        string s => bool.Parse(s),
        var o => Convert.ToDouble(o, CultureInfo.InvariantCulture) != 0,
    };

    public string String(string name, int model = -1) => Convert.ToString(Get(name, model), CultureInfo.InvariantCulture) ?? string.Empty;
}
