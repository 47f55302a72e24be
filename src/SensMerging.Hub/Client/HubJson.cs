using System.Text.Json.Serialization;

namespace SensMerging.Hub.Client;

/// <summary>Body of a paths-info request.</summary>
internal sealed record PathsInfoRequest(
    [property: JsonPropertyName("paths")] string[] Paths,
    [property: JsonPropertyName("expand")] bool Expand);

[JsonSerializable(typeof(PathsInfoRequest))]
internal sealed partial class HubJsonContext : JsonSerializerContext;
