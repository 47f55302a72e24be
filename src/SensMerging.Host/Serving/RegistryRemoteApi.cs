using System.Collections.Concurrent;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using SensMerging.Hub.Server;
using SensMerging.Hub.Server.Auth;
using SensMerging.Registry;
using SensMerging.Registry.Remote;

namespace SensMerging.Host.Serving;

/// <summary>
/// The registry of <c>serve</c> for other machines (<c>--registry http://host:port</c>, <see cref="RemoteMergeRegistry"/>):
/// every <see cref="IMergeRegistry"/> call as one request under <c>/api/registry/v1</c>, with a bearer token from the
/// server's token file (any scope reads, write scope records). Records begun through it hold a lease the client renews;
/// a record whose lease expires while it is running is marked failed, so a client that dies leaves no record running.
/// Updates are compare-and-swap on the record's version (ETag / If-Match): a lost race is answered 412 and retried.
/// </summary>
public sealed partial class RegistryRemoteApi
{
    private readonly IMergeRegistry _registry;
    private readonly HubTokenFile? _tokens;
    private readonly TimeSpan _lease;
    private readonly ILogger _logger;
    private readonly ConcurrentDictionary<string, DateTimeOffset> _leases = new(StringComparer.Ordinal);

    private RegistryRemoteApi(IMergeRegistry registry, HubTokenFile? tokens, TimeSpan lease, ILogger logger)
    {
        _registry = registry;
        _tokens = tokens;
        _lease = lease;
        _logger = logger;
    }

    /// <summary>Maps the API and starts the lease sweeper (stopped with the app).</summary>
    public static void Map(IEndpointRouteBuilder endpoints, IMergeRegistry registry, HubTokenFile? tokens, TimeSpan lease)
    {
        ArgumentNullException.ThrowIfNull(endpoints);
        var logger = endpoints.ServiceProvider.GetService<ILoggerFactory>()?.CreateLogger<RegistryRemoteApi>() ?? (ILogger)NullLogger.Instance;
        var api = new RegistryRemoteApi(registry, tokens, lease, logger);
        var stopping = endpoints.ServiceProvider.GetService<IHostApplicationLifetime>()?.ApplicationStopping ?? CancellationToken.None;
        _ = Task.Run(() => api.SweepAsync(stopping), CancellationToken.None);
        const string v1 = "/api/registry/v1/";
        endpoints.MapPost(v1 + "merges", (HttpContext c, CancellationToken _) => api.RunAsync(c, true, async ct =>
        {
            var record = await api._registry.BeginAsync(await ReadAsync<MergeRecord>(c, ct), ct);
            api._leases[record.Id] = DateTimeOffset.UtcNow + api._lease;
            c.Response.Headers[RemoteMergeRegistry.LeaseHeader] = api._lease.TotalSeconds.ToString(System.Globalization.CultureInfo.InvariantCulture);
            return Json(record);
        }));
        endpoints.MapGet(v1 + "merges/{id}", (HttpContext c, string id) => api.RunAsync(c, false, async ct =>
        {
            var record = await api._registry.GetAsync(id, ct) ?? throw new MergeNotFoundException(id);
            c.Response.Headers.ETag = Version(record);
            return Json(record);
        }));
        endpoints.MapPut(v1 + "merges/{id}", (HttpContext c, string id) => api.RunAsync(c, true, async ct =>
        {
            var expected = c.Request.Headers.IfMatch.ToString();
            var changed = await ReadAsync<MergeRecord>(c, ct);
            var stored = await api._registry.UpdateAsync(id, current =>
                Version(current) == expected ? changed : throw new VersionConflictException(id), ct);
            return Json(stored);
        }));
        endpoints.MapPost(v1 + "merges/{id}/complete", (HttpContext c, string id) => api.RunAsync(c, true, async ct =>
        {
            var body = await ReadAsync<RemoteMergeRegistry.CompleteBody>(c, ct);
            api._leases.TryRemove(id, out _);
            return Json(await api._registry.CompleteAsync(id, body.Outputs, body.Durations, ct));
        }));
        endpoints.MapPost(v1 + "merges/{id}/fail", (HttpContext c, string id) => api.RunAsync(c, true, async ct =>
        {
            var body = await ReadAsync<RemoteMergeRegistry.FailBody>(c, ct);
            api._leases.TryRemove(id, out _);
            var failed = await api._registry.FailAsync(id, new RemoteMergeFailureException(body.Error.Message), body.Durations, ct);
            // Keep the client's own exception type and detail, not the stand-in's.
            return Json(await api._registry.UpdateAsync(failed.Id, r => r with { Error = body.Error }, ct));
        }));
        endpoints.MapPost(v1 + "merges/{id}/cancel", (HttpContext c, string id) => api.RunAsync(c, true, async ct =>
        {
            var body = await ReadAsync<RemoteMergeRegistry.CancelBody>(c, ct);
            api._leases.TryRemove(id, out _);
            return Json(await api._registry.CancelAsync(id, body.Reason, body.Durations, ct));
        }));
        endpoints.MapPost(v1 + "merges/{id}/lease", (HttpContext c, string id) => api.RunAsync(c, true, async ct =>
        {
            var record = await api._registry.GetAsync(id, ct) ?? throw new MergeNotFoundException(id);
            if (record.Status != MergeStatus.Running)
            {
                throw new MergeStateException(record.Id, record.Status, "renew the lease of");
            }

            api._leases[record.Id] = DateTimeOffset.UtcNow + api._lease;
            return Json(new { });
        }));
        endpoints.MapPost(v1 + "abandoned", (HttpContext c, CancellationToken _) => api.RunAsync(c, true, async ct => Json(await api._registry.MarkAbandonedAsync(ct))));
        endpoints.MapPost(v1 + "evaluations", (HttpContext c, CancellationToken _) => api.RunAsync(c, true, async ct =>
        {
            var body = await ReadAsync<RemoteMergeRegistry.EvaluationBody>(c, ct);
            return Json(new RemoteMergeRegistry.IdBody(await api._registry.AddEvaluationAsync(body.IdOrModelRef, body.Evaluation, ct)));
        }));
        endpoints.MapPost(v1 + "query", (HttpContext c, CancellationToken _) => api.RunAsync(c, false, async ct => Json(await api._registry.ListAsync(await ReadAsync<MergeQuery>(c, ct), ct))));
        endpoints.MapPost(v1 + "lineage", (HttpContext c, CancellationToken _) => api.RunAsync(c, false, async ct =>
            Json(await api._registry.LineageAsync((await ReadAsync<RemoteMergeRegistry.ModelBody>(c, ct)).Model, ct))));
        endpoints.MapPost(v1 + "producers", (HttpContext c, CancellationToken _) => api.RunAsync(c, false, async ct =>
            Json(await api._registry.ProducersAsync((await ReadAsync<RemoteMergeRegistry.ModelBody>(c, ct)).Model, ct))));
        endpoints.MapPost(v1 + "merges/{id}/graph", (HttpContext c, string id) => api.RunAsync(c, false, async ct =>
            Json(new RemoteMergeRegistry.GraphBody(await api._registry.LineageGraphAsync(id, await ReadAsync<LineageBounds>(c, ct), ct)))));
        endpoints.MapGet(v1 + "merges/{id}/export", (HttpContext c, string id) => api.RunAsync(c, false, async ct =>
            Results.Text(await api._registry.ExportAsync(id, ct), "application/json", Encoding.UTF8)));
        endpoints.MapGet(v1 + "count", (HttpContext c, CancellationToken _) => api.RunAsync(c, false, async ct => Json(new RemoteMergeRegistry.CountBody(await api._registry.CountAsync(ct)))));
    }

    private static IResult Json<T>(T value) => Results.Text(RegistryJson.Serialize(value), "application/json", Encoding.UTF8);

    private static string Version(MergeRecord record) =>
        "\"" + Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(RegistryJson.Serialize(record)))) + "\"";

    private static async Task<T> ReadAsync<T>(HttpContext context, CancellationToken cancellationToken)
    {
        using var reader = new StreamReader(context.Request.Body, Encoding.UTF8);
        return RegistryJson.Deserialize<T>(await reader.ReadToEndAsync(cancellationToken));
    }

    private static IResult Error(int status, string kind, string message) =>
        Results.Json(new { error = message, kind }, statusCode: status);

    private async Task<IResult> RunAsync(HttpContext context, bool write, Func<CancellationToken, Task<IResult>> body)
    {
        var entry = _tokens?.Validate(HubServer.BearerTokenOf(context));
        if (_tokens is null)
        {
            return Error(403, "auth", "This server shares its registry only with a token file: start 'sensmerge serve' with --tokens FILE.");
        }

        if (entry is null)
        {
            return Error(401, "auth", "Invalid credentials in Authorization header: the shared registry needs a token (SENSMERGE_REGISTRY_TOKEN or HF_TOKEN).");
        }

        if (write && entry.Scope != HubTokenScope.Write)
        {
            return Error(403, "auth", $"The token '{entry.Name}' has the read scope only: recording merges needs a write token.");
        }

        try
        {
            return await body(context.RequestAborted);
        }
        catch (MergeNotFoundException ex)
        {
            return Error(404, "notFound", ex.Message);
        }
        catch (AmbiguousMergeIdException ex)
        {
            return Error(409, "ambiguous", ex.Message);
        }
        catch (VersionConflictException ex)
        {
            return Error(412, "version", ex.Message);
        }
        catch (MergeStateException ex)
        {
            return Error(409, "state", ex.Message);
        }
        catch (Exception ex) when (ex is JsonException or ArgumentException)
        {
            return Error(400, "badRequest", ex.Message);
        }
    }

    private async Task SweepAsync(CancellationToken stopping)
    {
        using var timer = new PeriodicTimer(TimeSpan.FromMilliseconds(Math.Clamp(_lease.TotalMilliseconds / 4, 100, 5000)));
        try
        {
            while (await timer.WaitForNextTickAsync(stopping))
            {
                var now = DateTimeOffset.UtcNow;
                foreach (var (id, expires) in _leases.Where(l => l.Value < now).ToList())
                {
                    if (!_leases.TryRemove(new KeyValuePair<string, DateTimeOffset>(id, expires)))
                    {
                        continue; // renewed meanwhile
                    }

                    try
                    {
                        var record = await _registry.GetAsync(id, stopping);
                        if (record?.Status == MergeStatus.Running)
                        {
                            await _registry.FailAsync(id, new LeaseExpiredException(
                                $"the client recording merge {id} stopped renewing its lease for {_lease.TotalSeconds:0.#} s (its process ended or it lost the server)"), null, stopping);
                            LogLeaseExpired(_logger, id);
                        }
                    }
                    catch (Exception ex) when (ex is MergeStateException or MergeNotFoundException)
                    {
                        // closed meanwhile
                    }
                }
            }
        }
        catch (OperationCanceledException)
        {
            // the server stops
        }
    }

    [LoggerMessage(EventId = 7301, Level = LogLevel.Warning, Message = "shared registry: merge {Id} marked failed, its client's lease expired")]
    private static partial void LogLeaseExpired(ILogger logger, string id);

    private sealed class VersionConflictException(string id) : Exception($"record {id} was changed by someone else meanwhile; read it again");
}

/// <summary>A merge recorded through the shared registry failed on its client (the record keeps the client's error).</summary>
public sealed class RemoteMergeFailureException(string message) : Exception(message);

/// <summary>A merge recorded through the shared registry lost its client: the lease was not renewed in time.</summary>
public sealed class LeaseExpiredException(string message) : Exception(message);
