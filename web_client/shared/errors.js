/**
 * The French text of the API's error codes (docs/protocol.md, "Errors" and
 * "End-to-end checks"). The server's own messages are English and meant for
 * developers; people are shown these. An unknown code still gets French.
 */

const TEXTS = {
  network: "Le serveur est injoignable. Vérifiez votre connexion puis réessayez.",
  malformed_json: "La demande envoyée est invalide. Rechargez la page puis réessayez.",
  missing_field: "Un champ obligatoire manque.",
  invalid_field: "Un champ n'a pas le bon format ou dépasse la longueur permise.",
  unknown_field: "La demande contient un champ inconnu. Rechargez la page puis réessayez.",
  unauthenticated: "Votre session a pris fin. Reconnectez-vous.",
  too_many_attempts: "Trop de tentatives. Patientez quelques minutes avant de réessayer.",
  busy: "Le serveur est très sollicité. Réessayez dans un instant.",
  not_member: "Vous n'avez pas accès à cette conversation.",
  forbidden: "Votre rôle ne permet pas cette opération.",
  not_found: "Élément introuvable.",
  unknown_message_type: "Ce type de message n'est pas pris en charge.",
  invalid_input: "Une valeur saisie n'est pas acceptée.",
  invalid_login: "L'identifiant doit compter de 2 à 64 caractères : lettres, chiffres, point, tiret, tiret bas ou @ (sans espace).",
  invalid_display_name: "Le nom doit compter de 1 à 100 caractères.",
  unknown_beneficiary: "Un des bénéficiaires choisis n'est pas (ou plus) suivi par vous.",
  empty_list: "Cochez au moins un bénéficiaire.",
  no_recipients: "Choisissez au moins un destinataire.",
  body_too_large: "Le contenu est trop volumineux.",
  invalid_date: "La date choisie n'est pas acceptée (passée ou à plus de deux ans).",
  invalid_transition: "Ce changement n'est plus possible dans l'état actuel.",
  unknown_item: "Cet élément n'existe pas (ou plus) dans la conversation.",
  item_exists: "Cet élément existe déjà.",
  unknown_target: "Le message visé est introuvable.",
  not_own_message: "Vous ne pouvez modifier que vos propres messages.",
  not_editable: "Ce message ne peut pas être modifié.",
  conversation_archived: "Cette conversation est archivée : elle est en lecture seule.",
  conversation_deleted: "Le compte de ce bénéficiaire a été supprimé.",
  wrong_password: "Mot de passe incorrect.",
  renewal_conflict: "Une autre demande de nouvelle clé de récupération vient d'aboutir sur un autre appareil : la clé affichée là-bas est la bonne. Pour en obtenir une nouvelle ici, recommencez.",
  not_archived: "Cette conversation n'est pas archivée.",
  archive_expired: "La période d'archivage est terminée : le compte est en cours de suppression.",
  rate_limited: "Trop de messages envoyés à la suite. Patientez un instant.",
  login_taken: "Cet identifiant est déjà utilisé.",
  store_unavailable: "Le service est momentanément indisponible. Rien n'a été enregistré : réessayez.",
  store_outcome_unknown: "L'envoi n'a pas pu être confirmé. Il sera renvoyé sans doublon.",
  overloaded: "Le service est très chargé. Votre message sera renvoyé dans un instant.",
  unknown_device: "Cet appareil n'est pas (ou plus) enregistré. Reconnectez-vous.",
  device_not_in_conversation: "Cet appareil n'a pas accès à cette conversation.",
  device_pending_approval: "Cet appareil attend l'accord de votre conseiller.",
  epoch_rotation_required: "Les clés de la conversation doivent être renouvelées. Réessayez.",
  stale_epoch: "Les clés de la conversation ont changé. Réessayez.",
  bad_signature: "La signature du message est invalide.",
  epoch_conflict: "Les clés ont été renouvelées par un autre appareil. Réessayez.",
  too_many_envelopes: "Trop de clés déjà partagées pour cet appareil.",
  device_not_approved: "Cet appareil attend encore l'accord de votre conseiller : réessayez ensuite.",
  device_exists: "Cet appareil est déjà enregistré. Reconnectez-vous.",
  too_many_devices: "Trop d'appareils sont liés à votre compte : retirez-en un d'abord (Mes appareils).",
};

/** French text for an API error code; `null` if the code is not known here. */
export function errorTextOf(code) {
  return Object.hasOwn(TEXTS, code) ? TEXTS[code] : null;
}

/** French text for any error (an ApiError, or anything thrown). */
export function errorText(err) {
  const known = err && typeof err.code === "string" ? errorTextOf(err.code) : null;
  if (known) return known;
  if (err && typeof err.status === "number" && err.status >= 500) return "Le serveur a rencontré un problème. Réessayez dans un instant.";
  return "L'opération n'a pas abouti. Réessayez ; si le problème persiste, contactez le support.";
}
