using System.Collections;
using System.Globalization;
using System.Text.Json;
using System.Text.Json.Serialization;

namespace SensMerging.Registry;

/// <summary>What a <see cref="ParameterValue"/> holds.</summary>
public enum ParameterValueKind
{
    Null,
    Boolean,
    Integer,
    Float,
    String,
    List,
    Map,
}

/// <summary>
/// A parameter value that keeps its type through storage and JSON: integers stay integers, floats stay floats
/// (written with a decimal point, <c>1.0</c>), booleans, strings, lists (mergekit's layer-interpolated lists,
/// <c>{filter, value}</c> lists) and maps. Non-finite floats are written as the strings <c>"NaN"</c>,
/// <c>"Infinity"</c>, <c>"-Infinity"</c> and read back as floats.
/// </summary>
[JsonConverter(typeof(ParameterValueJsonConverter))]
public sealed class ParameterValue : IEquatable<ParameterValue>
{
    private readonly object? _value;

    private ParameterValue(ParameterValueKind kind, object? value)
    {
        Kind = kind;
        _value = value;
    }

    /// <summary>Writes a double so it reads back exactly: round-trip digits as a JSON number, non-finite values as strings.</summary>
    internal static void WriteDouble(System.Text.Json.Utf8JsonWriter writer, double d)
    {
        if (double.IsFinite(d))
        {
            writer.WriteRawValue(FormatDouble(d), skipInputValidation: true);
        }
        else
        {
            writer.WriteStringValue(FormatDouble(d));
        }
    }

    public static ParameterValue Null { get; } = new(ParameterValueKind.Null, null);

    public ParameterValueKind Kind { get; }

    public bool AsBoolean => Kind == ParameterValueKind.Boolean ? (bool)_value! : throw WrongKind(ParameterValueKind.Boolean);

    public long AsInteger => Kind == ParameterValueKind.Integer ? (long)_value! : throw WrongKind(ParameterValueKind.Integer);

    /// <summary>The number as a double (integers convert).</summary>
    public double AsDouble => Kind switch
    {
        ParameterValueKind.Float => (double)_value!,
        ParameterValueKind.Integer => (long)_value!,
        _ => throw WrongKind(ParameterValueKind.Float),
    };

    public string AsString => Kind == ParameterValueKind.String ? (string)_value! : throw WrongKind(ParameterValueKind.String);

    public IReadOnlyList<ParameterValue> AsList => Kind == ParameterValueKind.List ? (IReadOnlyList<ParameterValue>)_value! : throw WrongKind(ParameterValueKind.List);

    public IReadOnlyDictionary<string, ParameterValue> AsMap =>
        Kind == ParameterValueKind.Map ? (IReadOnlyDictionary<string, ParameterValue>)_value! : throw WrongKind(ParameterValueKind.Map);

    public static ParameterValue Of(bool value) => new(ParameterValueKind.Boolean, value);

    public static ParameterValue Of(long value) => new(ParameterValueKind.Integer, value);

    public static ParameterValue Of(double value) => new(ParameterValueKind.Float, value);

    public static ParameterValue Of(string value) => new(ParameterValueKind.String, value ?? throw new ArgumentNullException(nameof(value)));

    public static ParameterValue Of(IEnumerable<ParameterValue> items) => new(ParameterValueKind.List, items.ToArray());

    public static ParameterValue Of(IEnumerable<KeyValuePair<string, ParameterValue>> entries) =>
        new(ParameterValueKind.Map, new SortedDictionary<string, ParameterValue>(entries.ToDictionary(e => e.Key, e => e.Value), StringComparer.Ordinal));

    /// <summary>
    /// Converts what configs and plugins hand over (<see cref="ResolvedParameters"/> values, decorator settings,
    /// YAML scalars): numbers, booleans, strings, enums, lists and dictionaries, recursively.
    /// </summary>
    public static ParameterValue FromObject(object? value) => value switch
    {
        null => Null,
        ParameterValue p => p,
        bool b => Of(b),
        sbyte or byte or short or ushort or int or uint or long => Of(Convert.ToInt64(value, CultureInfo.InvariantCulture)),
        ulong u => u <= long.MaxValue ? Of((long)u) : Of((double)u),
        float f => Of(WidenFloat(f)),
        double d => Of(d),
        decimal m => Of((double)m),
        string s => Of(s),
        Enum e => Of(e.ToString()),
        DateTime t => Of(t.ToUniversalTime().ToString("O", CultureInfo.InvariantCulture)),
        IDictionary dict => Of(dict.Keys.Cast<object>().Select(k => KeyValuePair.Create(
            Convert.ToString(k, CultureInfo.InvariantCulture) ?? string.Empty, FromObject(dict[k])))),
        IEnumerable<KeyValuePair<string, object>> pairs => Of(pairs.Select(p => KeyValuePair.Create(p.Key, FromObject(p.Value)))),
        IEnumerable items => Of(items.Cast<object?>().Select(FromObject)),
        IFormattable f => Of(f.ToString(null, CultureInfo.InvariantCulture)),
        _ => Of(value.ToString() ?? string.Empty),
    };

    /// <summary>A float as the double its shortest text denotes (0.1f becomes 0.1, not 0.100000001490116).</summary>
    private static double WidenFloat(float value) =>
        float.IsFinite(value) ? double.Parse(value.ToString("R", CultureInfo.InvariantCulture), CultureInfo.InvariantCulture) : value;

    /// <summary>Converts a whole map of plain values.</summary>
    public static IReadOnlyDictionary<string, ParameterValue> FromMap(IEnumerable<KeyValuePair<string, object>> values)
    {
        ArgumentNullException.ThrowIfNull(values);
        return values.ToDictionary(v => v.Key, v => FromObject(v.Value), StringComparer.Ordinal);
    }

    /// <summary>The plain .NET value: bool, long, double, string, a list or a dictionary of those, or null.</summary>
    public object? ToObject() => Kind switch
    {
        ParameterValueKind.List => AsList.Select(v => v.ToObject()).ToList(),
        ParameterValueKind.Map => AsMap.ToDictionary(kv => kv.Key, kv => kv.Value.ToObject()),
        _ => _value,
    };

    public static implicit operator ParameterValue(bool value) => Of(value);

    public static implicit operator ParameterValue(long value) => Of(value);

    public static implicit operator ParameterValue(int value) => Of(value);

    public static implicit operator ParameterValue(double value) => Of(value);

    public static implicit operator ParameterValue(string value) => Of(value);

    public bool Equals(ParameterValue? other)
    {
        if (other is null || other.Kind != Kind)
        {
            return false;
        }
        return Kind switch
        {
            ParameterValueKind.Null => true,
            ParameterValueKind.Float => ((double)_value!).Equals((double)other._value!),
            ParameterValueKind.List => AsList.SequenceEqual(other.AsList),
            ParameterValueKind.Map => AsMap.Count == other.AsMap.Count
                && AsMap.All(kv => other.AsMap.TryGetValue(kv.Key, out var o) && kv.Value.Equals(o)),
            _ => Equals(_value, other._value),
        };
    }

    public override bool Equals(object? obj) => Equals(obj as ParameterValue);

    public override int GetHashCode() => Kind switch
    {
        ParameterValueKind.List => AsList.Aggregate((int)Kind, (h, v) => HashCode.Combine(h, v)),
        ParameterValueKind.Map => AsMap.Aggregate((int)Kind, (h, kv) => h ^ HashCode.Combine(kv.Key, kv.Value)),
        _ => HashCode.Combine(Kind, _value),
    };

    /// <summary>A compact text form: <c>0.5</c>, <c>true</c>, <c>"text"</c> as <c>text</c>, <c>[1.0, 0.5]</c>, <c>{a: 1}</c>.</summary>
    public override string ToString() => Kind switch
    {
        ParameterValueKind.Null => "null",
        ParameterValueKind.Boolean => AsBoolean ? "true" : "false",
        ParameterValueKind.Integer => AsInteger.ToString(CultureInfo.InvariantCulture),
        ParameterValueKind.Float => FormatDouble(AsDouble),
        ParameterValueKind.String => AsString,
        ParameterValueKind.List => "[" + string.Join(", ", AsList.Select(v => v.ToString())) + "]",
        _ => "{" + string.Join(", ", AsMap.Select(kv => kv.Key + ": " + kv.Value)) + "}",
    };

    /// <summary>Shortest round-trip text of a double, always with a decimal point or exponent.</summary>
    internal static string FormatDouble(double value)
    {
        if (!double.IsFinite(value))
        {
            return double.IsNaN(value) ? "NaN" : value > 0 ? "Infinity" : "-Infinity";
        }
        var text = value.ToString("R", CultureInfo.InvariantCulture);
        return text.Contains('.', StringComparison.Ordinal) || text.Contains('E', StringComparison.Ordinal) ? text : text + ".0";
    }

    private InvalidOperationException WrongKind(ParameterValueKind wanted) =>
        new($"parameter value is {Kind.ToString().ToLowerInvariant()} ({this}), not {wanted.ToString().ToLowerInvariant()}");
}

/// <summary>Writes <see cref="ParameterValue"/> as plain JSON and reads it back with its kind.</summary>
public sealed class ParameterValueJsonConverter : JsonConverter<ParameterValue>
{
    public override bool HandleNull => true;

    public override ParameterValue Read(ref Utf8JsonReader reader, Type typeToConvert, JsonSerializerOptions options)
    {
        switch (reader.TokenType)
        {
            case JsonTokenType.Null:
                return ParameterValue.Null;
            case JsonTokenType.True:
                return ParameterValue.Of(true);
            case JsonTokenType.False:
                return ParameterValue.Of(false);
            case JsonTokenType.String:
                var s = reader.GetString()!;
                return s switch
                {
                    "NaN" => ParameterValue.Of(double.NaN),
                    "Infinity" => ParameterValue.Of(double.PositiveInfinity),
                    "-Infinity" => ParameterValue.Of(double.NegativeInfinity),
                    _ => ParameterValue.Of(s),
                };
            case JsonTokenType.Number:
                var raw = reader.HasValueSequence ? System.Text.Encoding.UTF8.GetString(System.Buffers.BuffersExtensions.ToArray(reader.ValueSequence)) : System.Text.Encoding.UTF8.GetString(reader.ValueSpan);
                if (raw.AsSpan().IndexOfAny(".eE") < 0 && reader.TryGetInt64(out var l))
                {
                    return ParameterValue.Of(l);
                }
                return ParameterValue.Of(reader.GetDouble());
            case JsonTokenType.StartArray:
                var items = new List<ParameterValue>();
                while (reader.Read() && reader.TokenType != JsonTokenType.EndArray)
                {
                    items.Add(Read(ref reader, typeToConvert, options));
                }
                return ParameterValue.Of(items);
            case JsonTokenType.StartObject:
                var map = new List<KeyValuePair<string, ParameterValue>>();
                while (reader.Read() && reader.TokenType != JsonTokenType.EndObject)
                {
                    var key = reader.GetString()!;
                    reader.Read();
                    map.Add(KeyValuePair.Create(key, Read(ref reader, typeToConvert, options)));
                }
                return ParameterValue.Of(map);
            default:
                throw new JsonException($"unexpected {reader.TokenType} where a parameter value was expected");
        }
    }

    public override void Write(Utf8JsonWriter writer, ParameterValue value, JsonSerializerOptions options)
    {
        ArgumentNullException.ThrowIfNull(writer);
        if (value is null)
        {
            writer.WriteNullValue();
            return;
        }
        switch (value.Kind)
        {
            case ParameterValueKind.Null:
                writer.WriteNullValue();
                break;
            case ParameterValueKind.Boolean:
                writer.WriteBooleanValue(value.AsBoolean);
                break;
            case ParameterValueKind.Integer:
                writer.WriteNumberValue(value.AsInteger);
                break;
            case ParameterValueKind.Float:
                ParameterValue.WriteDouble(writer, value.AsDouble);
                break;
            case ParameterValueKind.String:
                writer.WriteStringValue(value.AsString);
                break;
            case ParameterValueKind.List:
                writer.WriteStartArray();
                foreach (var item in value.AsList)
                {
                    Write(writer, item, options);
                }
                writer.WriteEndArray();
                break;
            default:
                writer.WriteStartObject();
                foreach (var (k, v) in value.AsMap)
                {
                    writer.WritePropertyName(k);
                    Write(writer, v, options);
                }
                writer.WriteEndObject();
                break;
        }
    }
}
