using System.Text.Json;
using System.Text.Json.Serialization;

namespace SensMerging.Registry;

/// <summary>
/// The JSON form of registry data (export, <c>--json</c> outputs, storage): camelCase names, enums as camelCase
/// strings, indented, non-finite floats as the strings <c>"NaN"</c>/<c>"Infinity"</c>. Schema: docs/registry.md.
/// </summary>
public static class RegistryJson
{
    /// <summary>Identifies an exported record.</summary>
    public const string ExportKind = "sensmerge.merge";

    /// <summary>Indented output for people and scripts.</summary>
    public static JsonSerializerOptions Options { get; } = Create(indented: true);

    /// <summary>Compact output (storage).</summary>
    internal static JsonSerializerOptions Compact { get; } = Create(indented: false);

    private static JsonSerializerOptions Create(bool indented)
    {
        var options = new JsonSerializerOptions(JsonSerializerDefaults.Web)
        {
            WriteIndented = indented,
            NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals,
            DefaultIgnoreCondition = JsonIgnoreCondition.Never,
            RespectNullableAnnotations = false,
        };
        options.Converters.Add(new JsonStringEnumConverter(JsonNamingPolicy.CamelCase, allowIntegerValues: false));
        options.MakeReadOnly(populateMissingResolver: true);
        return options;
    }

    public static string Serialize<T>(T value) => JsonSerializer.Serialize(value, Options);

    public static T Deserialize<T>(string json) =>
        JsonSerializer.Deserialize<T>(json, Options) ?? throw new JsonException($"JSON text holds null where a {typeof(T).Name} was expected");

    /// <summary>The export document of a record: <c>{ "kind", "schemaVersion", "exportedAt", "record" }</c>.</summary>
    public static string Export(MergeRecord record, DateTime? exportedAt = null)
    {
        ArgumentNullException.ThrowIfNull(record);
        return Serialize(new MergeExport(ExportKind, LiteDbMergeRegistry.CurrentSchemaVersion, exportedAt ?? DateTime.UtcNow, record));
    }

    /// <summary>Reads an export document back (for tooling and tests).</summary>
    public static MergeExport ReadExport(string json)
    {
        var export = Deserialize<MergeExport>(json);
        return export.Kind == ExportKind
            ? export
            : throw new JsonException($"not a sensmerge merge export: kind is '{export.Kind}', expected '{ExportKind}'");
    }
}

/// <summary>The document <c>registry export</c> writes.</summary>
/// <param name="Kind">Always <c>sensmerge.merge</c>.</param>
/// <param name="SchemaVersion">The registry schema version the record follows.</param>
/// <param name="ExportedAt">UTC time of the export.</param>
/// <param name="Record">The merge record.</param>
public sealed record MergeExport(string Kind, int SchemaVersion, DateTime ExportedAt, MergeRecord Record);
