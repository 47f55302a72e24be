using System.Collections.Concurrent;
using System.Globalization;
using System.Net;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace SensMerging.Registry.Remote;

/// <summary>
/// The registry of a remote <c>sensmerge serve</c> (<c>--registry http(s)://host:port</c> or <c>SENSMERGE_REGISTRY</c>),
/// through its API under <c>/api/registry/v1</c> with a bearer token (<c>SENSMERGE_REGISTRY_TOKEN</c>, else
/// <c>HF_TOKEN</c>). The server keeps the LiteDB file; every call is one request. A record begun here holds a lease that
/// this client renews while the process lives (every third of the lease); when the renewals stop (the process died, the
/// network went away) the server marks the record failed once the lease expires. <see cref="UpdateAsync"/> reads the
/// record, applies the change here and writes it back only if nobody changed it meanwhile (else it reads again).
/// </summary>
public sealed partial class RemoteMergeRegistry : IMergeRegistry, IDisposable
{
    /// <summary>The API's path under the server's address.</summary>
    public const string ApiPath = "api/registry/v1/";

    /// <summary>The header in which the server states its lease (seconds) when a record is begun.</summary>
    public const string LeaseHeader = "X-Registry-Lease-Seconds";

    private readonly HttpClient _http;
    private readonly Uri _api;
    private readonly string? _token;
    private readonly ILogger _logger;
    private readonly ConcurrentDictionary<string, CancellationTokenSource> _leases = new(StringComparer.Ordinal);

    /// <param name="server">The server, e.g. http://team-hub:5080.</param>
    /// <param name="token">Bearer token (write scope to record merges).</param>
    /// <param name="http">The HTTP client (disposed with this registry).</param>
    /// <param name="logger">Logger.</param>
    public RemoteMergeRegistry(Uri server, string? token, HttpClient? http = null, ILogger<RemoteMergeRegistry>? logger = null)
    {
        ArgumentNullException.ThrowIfNull(server);
        FilePath = server.GetLeftPart(UriPartial.Path).TrimEnd('/');
        _api = new Uri(FilePath + "/" + ApiPath);
        _token = token;
        _http = http ?? new HttpClient { Timeout = TimeSpan.FromMinutes(2) };
        _logger = (ILogger?)logger ?? NullLogger.Instance;
    }

    /// <summary>True for a registry setting that names a server rather than a file.</summary>
    public static bool IsRemote(string? registry) =>
        registry is not null && (registry.StartsWith("http://", StringComparison.OrdinalIgnoreCase) || registry.StartsWith("https://", StringComparison.OrdinalIgnoreCase));

    /// <summary>The server's address (no file on this machine).</summary>
    public string FilePath { get; }

    /// <summary>How often at most a running record's lease is renewed (more often when the server's lease is shorter than three times this).</summary>
    public TimeSpan LeaseRenewal { get; init; } = TimeSpan.FromSeconds(10);

    public async Task<MergeRecord> BeginAsync(MergeRecord draft, CancellationToken cancellationToken = default)
    {
        using var request = Request(HttpMethod.Post, "merges", draft);
        using var response = await _http.SendAsync(request, cancellationToken);
        await EnsureSuccessAsync(response, "merges", cancellationToken);
        var record = RegistryJson.Deserialize<MergeRecord>(await response.Content.ReadAsStringAsync(cancellationToken));
        // Renew three times per lease the server grants (never less often than LeaseRenewal).
        var renewal = LeaseRenewal;
        if (response.Headers.TryGetValues(LeaseHeader, out var values)
            && double.TryParse(values.FirstOrDefault(), NumberStyles.Float, CultureInfo.InvariantCulture, out var seconds) && seconds > 0)
        {
            renewal = TimeSpan.FromSeconds(Math.Min(renewal.TotalSeconds, seconds / 3));
        }

        StartLease(record.Id, renewal);
        return record;
    }

    public async Task<MergeRecord> UpdateAsync(string id, Func<MergeRecord, MergeRecord> update, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(update);
        for (int attempt = 0; ; attempt++)
        {
            using var request = Request(HttpMethod.Get, "merges/" + Uri.EscapeDataString(id), null);
            using var response = await _http.SendAsync(request, cancellationToken);
            await EnsureSuccessAsync(response, id, cancellationToken);
            var version = response.Headers.ETag?.Tag ?? throw new InvalidOperationException($"registry server {FilePath} sent no version of record {id}");
            var current = RegistryJson.Deserialize<MergeRecord>(await response.Content.ReadAsStringAsync(cancellationToken));
            var changed = update(current);
            using var put = Request(HttpMethod.Put, "merges/" + Uri.EscapeDataString(current.Id), changed);
            put.Headers.IfMatch.Add(new EntityTagHeaderValue(version));
            using var written = await _http.SendAsync(put, cancellationToken);
            if (written.StatusCode == HttpStatusCode.PreconditionFailed && attempt < 20)
            {
                continue; // changed meanwhile by another client: read it again and apply the change to that
            }

            await EnsureSuccessAsync(written, id, cancellationToken);
            return RegistryJson.Deserialize<MergeRecord>(await written.Content.ReadAsStringAsync(cancellationToken));
        }
    }

    public async Task<MergeRecord> CompleteAsync(string id, MergeOutputs outputs, IReadOnlyDictionary<string, double>? durations = null, CancellationToken cancellationToken = default)
    {
        var record = await SendAsync<MergeRecord>(HttpMethod.Post, $"merges/{Uri.EscapeDataString(id)}/complete", new CompleteBody(outputs, durations), cancellationToken);
        StopLease(record.Id);
        return record;
    }

    public async Task<MergeRecord> FailAsync(string id, Exception exception, IReadOnlyDictionary<string, double>? durations = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(exception);
        var record = await SendAsync<MergeRecord>(HttpMethod.Post, $"merges/{Uri.EscapeDataString(id)}/fail", new FailBody(MergeError.From(exception), durations), cancellationToken);
        StopLease(record.Id);
        return record;
    }

    public async Task<MergeRecord> CancelAsync(string id, string? reason = null, IReadOnlyDictionary<string, double>? durations = null, CancellationToken cancellationToken = default)
    {
        var record = await SendAsync<MergeRecord>(HttpMethod.Post, $"merges/{Uri.EscapeDataString(id)}/cancel", new CancelBody(reason, durations), cancellationToken);
        StopLease(record.Id);
        return record;
    }

    /// <summary>The server closes abandoned records itself (processes on its machine, and expired leases).</summary>
    public Task<IReadOnlyList<string>> MarkAbandonedAsync(CancellationToken cancellationToken = default) =>
        SendAsync<IReadOnlyList<string>>(HttpMethod.Post, "abandoned", new { }, cancellationToken);

    public async Task<string> AddEvaluationAsync(string idOrModelRef, EvaluationResult evaluation, CancellationToken cancellationToken = default) =>
        (await SendAsync<IdBody>(HttpMethod.Post, "evaluations", new EvaluationBody(idOrModelRef, evaluation), cancellationToken)).Id;

    public Task<IReadOnlyList<MergeSummary>> ListAsync(MergeQuery query, CancellationToken cancellationToken = default) =>
        SendAsync<IReadOnlyList<MergeSummary>>(HttpMethod.Post, "query", query, cancellationToken);

    public async Task<MergeRecord?> GetAsync(string idOrPrefix, CancellationToken cancellationToken = default)
    {
        using var request = Request(HttpMethod.Get, "merges/" + Uri.EscapeDataString(idOrPrefix), null);
        using var response = await _http.SendAsync(request, cancellationToken);
        if (response.StatusCode == HttpStatusCode.NotFound)
        {
            return null;
        }

        await EnsureSuccessAsync(response, idOrPrefix, cancellationToken);
        return RegistryJson.Deserialize<MergeRecord>(await response.Content.ReadAsStringAsync(cancellationToken));
    }

    public Task<ModelLineage> LineageAsync(string modelRef, CancellationToken cancellationToken = default) =>
        SendAsync<ModelLineage>(HttpMethod.Post, "lineage", new ModelBody(modelRef), cancellationToken);

    public Task<IReadOnlyList<MergeSummary>> ProducersAsync(string modelRef, CancellationToken cancellationToken = default) =>
        SendAsync<IReadOnlyList<MergeSummary>>(HttpMethod.Post, "producers", new ModelBody(modelRef), cancellationToken);

    public async Task<LineageGraph?> LineageGraphAsync(string id, LineageBounds bounds, CancellationToken cancellationToken = default) =>
        (await SendAsync<GraphBody>(HttpMethod.Post, $"merges/{Uri.EscapeDataString(id)}/graph", bounds, cancellationToken)).Graph;

    public async Task<string> ExportAsync(string idOrPrefix, CancellationToken cancellationToken = default)
    {
        using var request = Request(HttpMethod.Get, $"merges/{Uri.EscapeDataString(idOrPrefix)}/export", null);
        using var response = await _http.SendAsync(request, cancellationToken);
        await EnsureSuccessAsync(response, idOrPrefix, cancellationToken);
        return await response.Content.ReadAsStringAsync(cancellationToken);
    }

    public async Task<int> CountAsync(CancellationToken cancellationToken = default) =>
        (await SendAsync<CountBody>(HttpMethod.Get, "count", null, cancellationToken)).Count;

    public void Dispose()
    {
        foreach (var id in _leases.Keys.ToList())
        {
            StopLease(id);
        }

        _http.Dispose();
    }

    private void StartLease(string id, TimeSpan renewal)
    {
        var cts = new CancellationTokenSource();
        _leases[id] = cts;
        _ = Task.Run(async () =>
        {
            using var timer = new PeriodicTimer(renewal);
            try
            {
                while (await timer.WaitForNextTickAsync(cts.Token))
                {
                    try
                    {
                        using var request = Request(HttpMethod.Post, $"merges/{Uri.EscapeDataString(id)}/lease", new { });
                        using var response = await _http.SendAsync(request, cts.Token);
                        if (!response.IsSuccessStatusCode)
                        {
                            LogLeaseRefused(_logger, id, (int)response.StatusCode);
                        }
                    }
                    catch (HttpRequestException ex)
                    {
                        LogLeaseUnreachable(_logger, id, ex.Message);
                    }
                }
            }
            catch (OperationCanceledException)
            {
                // the record was closed, or the registry disposed
            }
        });
    }

    private void StopLease(string id)
    {
        if (_leases.TryRemove(id, out var cts))
        {
            cts.Cancel();
            cts.Dispose();
        }
    }

    private HttpRequestMessage Request(HttpMethod method, string relative, object? body)
    {
        var request = new HttpRequestMessage(method, new Uri(_api, relative));
        if (_token is { Length: > 0 })
        {
            request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", _token);
        }

        if (body is not null)
        {
            request.Content = new StringContent(JsonSerializer.Serialize(body, body.GetType(), RegistryJson.Options), Encoding.UTF8, "application/json");
        }

        return request;
    }

    private async Task<T> SendAsync<T>(HttpMethod method, string relative, object? body, CancellationToken cancellationToken)
    {
        using var request = Request(method, relative, body);
        HttpResponseMessage response;
        try
        {
            response = await _http.SendAsync(request, cancellationToken);
        }
        catch (HttpRequestException ex)
        {
            throw new InvalidOperationException($"registry server {FilePath} cannot be reached: {ex.Message}", ex);
        }

        using (response)
        {
            await EnsureSuccessAsync(response, relative, cancellationToken);
            return RegistryJson.Deserialize<T>(await response.Content.ReadAsStringAsync(cancellationToken));
        }
    }

    private async Task EnsureSuccessAsync(HttpResponseMessage response, string what, CancellationToken cancellationToken)
    {
        if (response.IsSuccessStatusCode)
        {
            return;
        }

        var text = await response.Content.ReadAsStringAsync(cancellationToken);
        string message = text;
        string? kind = null;
        try
        {
            using var doc = JsonDocument.Parse(text);
            message = doc.RootElement.TryGetProperty("error", out var e) ? e.GetString() ?? text : text;
            kind = doc.RootElement.TryGetProperty("kind", out var k) ? k.GetString() : null;
        }
        catch (JsonException)
        {
            // not the server's JSON error: keep the text
        }

        if (_token is { Length: > 0 })
        {
            message = message.Replace(_token, "***", StringComparison.Ordinal);
        }

        var status = ((int)response.StatusCode).ToString(CultureInfo.InvariantCulture);
        throw kind switch
        {
            "notFound" => new MergeNotFoundException(what),
            "ambiguous" => new ArgumentException(message),
            "state" => new InvalidOperationException(message),
            _ => new InvalidOperationException($"registry server {FilePath} refused the request ({status}): {message}"),
        };
    }

    /// <summary>Body of <c>complete</c>.</summary>
    public sealed record CompleteBody(MergeOutputs Outputs, IReadOnlyDictionary<string, double>? Durations);

    /// <summary>Body of <c>fail</c>.</summary>
    public sealed record FailBody(MergeError Error, IReadOnlyDictionary<string, double>? Durations);

    /// <summary>Body of <c>cancel</c>.</summary>
    public sealed record CancelBody(string? Reason, IReadOnlyDictionary<string, double>? Durations);

    /// <summary>Body of <c>evaluations</c>.</summary>
    public sealed record EvaluationBody(string IdOrModelRef, EvaluationResult Evaluation);

    /// <summary>A model reference.</summary>
    public sealed record ModelBody(string Model);

    /// <summary>An id.</summary>
    public sealed record IdBody(string Id);

    /// <summary>A count.</summary>
    public sealed record CountBody(int Count);

    /// <summary>A lineage graph or none.</summary>
    public sealed record GraphBody(LineageGraph? Graph);

    [LoggerMessage(EventId = 7201, Level = LogLevel.Warning, Message = "registry lease of {Id} refused by the server ({Status})")]
    private static partial void LogLeaseRefused(ILogger logger, string id, int status);

    [LoggerMessage(EventId = 7202, Level = LogLevel.Warning, Message = "registry lease of {Id} not renewed: {Reason}")]
    private static partial void LogLeaseUnreachable(ILogger logger, string id, string reason);
}
