using System.Text.Json;
using System.Text.Json.Serialization;

namespace SensMerging.Host;

/// <summary>The one JSON style of every <c>--json</c> output: camelCase, indented, enums as strings, nulls omitted.</summary>
public static class JsonOutput
{
    public static JsonSerializerOptions Options { get; } = new(JsonSerializerDefaults.Web)
    {
        WriteIndented = true,
        DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
        Converters = { new JsonStringEnumConverter() },
    };
}
